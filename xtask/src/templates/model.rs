//! Typed models of Datadog dashboards, monitors and Cloud SIEM detection rules.
//!
//! Every struct denies unknown fields and every closed set of values is an enum, so a typo
//! (`titel`, `"type": "pie"`, `"evaluationWindow": 120`) is an error, not a field Datadog
//! silently drops. The models only *check*: the JSON sent to Datadog is the rendered template
//! itself, so a field these models do not read is never lost. Deeply nested, rarely used parts
//! (axis styles, time ranges) are kept as [`Value`] and not checked further.
//!
//! Widget definitions are dispatched by their `type` by hand ([`parse_widget_definition`]) so
//! that an error inside a definition carries its full JSON pointer.

// The fields exist to be checked by deserialization; most are never read afterwards.
#![allow(dead_code)]

use serde::Deserialize;
use serde_json::Value;

/// A deserialization error with the JSON pointer (relative to the value parsed) where it occurred.
#[derive(Debug)]
pub(crate) struct ModelError {
    pub(crate) pointer: String,
    pub(crate) message: String,
}

/// Parses `value` as `T`, turning a serde error into a pointer and a message.
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(value: &Value) -> Result<T, ModelError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|err| {
        let mut pointer = String::new();
        for segment in err.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => {
                    pointer.push('/');
                    pointer.push_str(&index.to_string());
                }
                serde_path_to_error::Segment::Map { key } => {
                    pointer.push('/');
                    pointer.push_str(&super::escape_pointer(key));
                }
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => {}
            }
        }
        let message = err.inner().to_string();
        // Point at the unknown key itself, not at the object holding it.
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some((field, _)) = rest.split_once('`')
        {
            let tail = format!("/{}", super::escape_pointer(field));
            if !pointer.ends_with(&tail) {
                pointer.push_str(&tail);
            }
        }
        ModelError { pointer, message }
    })
}

// ---------------------------------------------------------------------------------------------
// Dashboards
// ---------------------------------------------------------------------------------------------

/// Every widget `definition.type` Datadog documents, in the spec's order (the fake intake owns
/// the list, so the emulator and the template checks agree).
pub(crate) use clawdstrike_fakeintake::DOCUMENTED_WIDGET_TYPES as WIDGET_TYPES;

/// A dashboard (`/api/v1/dashboard`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Dashboard {
    pub(crate) title: String,
    pub(crate) description: Option<String>,
    pub(crate) layout_type: LayoutType,
    pub(crate) reflow_type: Option<ReflowType>,
    /// Checked one by one (`check::check_widgets`), for precise pointers.
    pub(crate) widgets: Vec<Value>,
    pub(crate) template_variables: Option<Vec<TemplateVariable>>,
    pub(crate) template_variable_presets: Option<Value>,
    pub(crate) notify_list: Option<Vec<String>>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) is_read_only: Option<bool>,
    pub(crate) restricted_roles: Option<Vec<String>>,
    // Read-only fields Datadog returns (present in exported dashboards).
    pub(crate) id: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) author_handle: Option<String>,
    pub(crate) author_name: Option<String>,
    pub(crate) created_at: Option<String>,
    pub(crate) modified_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LayoutType {
    Ordered,
    Free,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReflowType {
    Auto,
    Fixed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TemplateVariable {
    pub(crate) name: String,
    pub(crate) prefix: Option<String>,
    pub(crate) default: Option<String>,
    pub(crate) defaults: Option<Vec<String>>,
    pub(crate) available_values: Option<Vec<String>>,
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
}

/// One widget; its `definition` is checked by [`parse_widget_definition`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Widget {
    pub(crate) definition: Value,
    pub(crate) id: Option<i64>,
    pub(crate) layout: Option<WidgetLayout>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WidgetLayout {
    pub(crate) x: i64,
    pub(crate) y: i64,
    pub(crate) width: i64,
    pub(crate) height: i64,
    pub(crate) is_column_break: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TextAlign {
    Center,
    Left,
    Right,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CustomLink {
    pub(crate) label: Option<String>,
    pub(crate) link: Option<String>,
    pub(crate) is_hidden: Option<bool>,
    pub(crate) override_label: Option<String>,
}

/// A widget request: the classic `q` form or the `queries` + `formulas` form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Request {
    pub(crate) q: Option<String>,
    pub(crate) queries: Option<Vec<FormulaQuery>>,
    pub(crate) formulas: Option<Vec<Formula>>,
    pub(crate) response_format: Option<ResponseFormat>,
    pub(crate) aggregator: Option<RequestAggregator>,
    pub(crate) display_type: Option<DisplayType>,
    pub(crate) conditional_formats: Option<Vec<ConditionalFormat>>,
    pub(crate) style: Option<Value>,
    pub(crate) metadata: Option<Value>,
    pub(crate) on_right_yaxis: Option<bool>,
    pub(crate) alias: Option<String>,
    pub(crate) limit: Option<u64>,
    pub(crate) order: Option<SortOrder>,
    pub(crate) change_type: Option<ChangeType>,
    pub(crate) compare_to: Option<CompareTo>,
    pub(crate) increase_good: Option<bool>,
    pub(crate) order_by: Option<ChangeOrderBy>,
    pub(crate) order_dir: Option<SortOrder>,
    pub(crate) show_present: Option<bool>,
    pub(crate) cell_display_mode: Option<Vec<String>>,
    pub(crate) text_formats: Option<Value>,
    pub(crate) sort: Option<Value>,
    pub(crate) log_query: Option<Value>,
    /// With `request_type: histogram`: a distribution widget's formula-style query (checked in
    /// `check_definition`; any other widget's request refuses it).
    pub(crate) request_type: Option<String>,
    pub(crate) query: Option<Value>,
    pub(crate) apm_query: Option<Value>,
    pub(crate) apm_stats_query: Option<Value>,
    pub(crate) rum_query: Option<Value>,
    pub(crate) security_query: Option<Value>,
    pub(crate) network_query: Option<Value>,
    pub(crate) event_query: Option<Value>,
    pub(crate) process_query: Option<Value>,
    pub(crate) profile_metrics_query: Option<Value>,
    pub(crate) audit_query: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ResponseFormat {
    Timeseries,
    Scalar,
    EventList,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RequestAggregator {
    Avg,
    Last,
    Max,
    Min,
    Sum,
    Percentile,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DisplayType {
    Area,
    Bars,
    Line,
    Overlay,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SortOrder {
    Asc,
    Desc,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChangeType {
    Absolute,
    Relative,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::enum_variant_names)] // Datadog's names
pub(crate) enum CompareTo {
    HourBefore,
    DayBefore,
    WeekBefore,
    MonthBefore,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChangeOrderBy {
    Change,
    Name,
    Present,
    Past,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConditionalFormat {
    pub(crate) comparator: Comparator,
    pub(crate) value: f64,
    pub(crate) palette: String,
    pub(crate) custom_bg_color: Option<String>,
    pub(crate) custom_fg_color: Option<String>,
    pub(crate) hide_value: Option<bool>,
    pub(crate) image_url: Option<String>,
    pub(crate) metric: Option<String>,
    pub(crate) timeframe: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) enum Comparator {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

/// One query of the `queries` + `formulas` form, for any data source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FormulaQuery {
    pub(crate) data_source: DataSource,
    pub(crate) name: String,
    pub(crate) query: Option<String>,
    pub(crate) aggregator: Option<QueryAggregator>,
    pub(crate) search: Option<Search>,
    pub(crate) indexes: Option<Vec<String>>,
    pub(crate) compute: Option<Compute>,
    pub(crate) group_by: Option<Vec<GroupBy>>,
    pub(crate) storage: Option<String>,
    pub(crate) cross_org_uuids: Option<Vec<String>>,
    pub(crate) semantic_mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DataSource {
    Metrics,
    CloudCost,
    Logs,
    Spans,
    Network,
    Rum,
    SecuritySignals,
    Profiles,
    Audit,
    Events,
    CiTests,
    CiPipelines,
    IncidentAnalytics,
    ProductAnalytics,
    DatabaseQueries,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum QueryAggregator {
    Avg,
    Min,
    Max,
    Sum,
    Last,
    Area,
    L2norm,
    Percentile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Search {
    pub(crate) query: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Compute {
    pub(crate) aggregation: ComputeAggregation,
    pub(crate) metric: Option<String>,
    pub(crate) interval: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ComputeAggregation {
    Count,
    Cardinality,
    Median,
    Pc75,
    Pc90,
    Pc95,
    Pc98,
    Pc99,
    Sum,
    Min,
    Max,
    Avg,
    Earliest,
    Latest,
    MostFrequent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupBy {
    pub(crate) facet: String,
    pub(crate) limit: Option<u64>,
    pub(crate) sort: Option<GroupBySort>,
    pub(crate) should_exclude_missing: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupBySort {
    pub(crate) aggregation: ComputeAggregation,
    pub(crate) order: Option<SortOrder>,
    pub(crate) metric: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Formula {
    pub(crate) formula: String,
    pub(crate) alias: Option<String>,
    pub(crate) limit: Option<FormulaLimit>,
    pub(crate) conditional_formats: Option<Vec<ConditionalFormat>>,
    pub(crate) cell_display_mode: Option<String>,
    pub(crate) cell_display_mode_options: Option<Value>,
    pub(crate) style: Option<Value>,
    pub(crate) number_format: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FormulaLimit {
    pub(crate) count: Option<u64>,
    pub(crate) order: Option<SortOrder>,
}

/// Declares a widget definition struct with the fields most definitions share.
macro_rules! definition {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $name {
            pub(crate) title: Option<String>,
            pub(crate) title_size: Option<String>,
            pub(crate) title_align: Option<TextAlign>,
            pub(crate) time: Option<Value>,
            pub(crate) custom_links: Option<Vec<CustomLink>>,
            pub(crate) description: Option<String>,
            $(pub(crate) $field: $ty,)*
        }
    };
}

definition!(TimeseriesDef {
    requests: Vec<Request>,
    show_legend: Option<bool>,
    legend_size: Option<String>,
    legend_layout: Option<LegendLayout>,
    legend_columns: Option<Vec<String>>,
    yaxis: Option<Value>,
    right_yaxis: Option<Value>,
    markers: Option<Vec<Value>>,
    events: Option<Vec<Value>>,
});

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LegendLayout {
    Auto,
    Horizontal,
    Vertical,
}

definition!(QueryValueDef {
    requests: Vec<Request>,
    autoscale: Option<bool>,
    custom_unit: Option<String>,
    precision: Option<u32>,
    text_align: Option<TextAlign>,
    timeseries_background: Option<Value>,
});

definition!(ToplistDef { requests: Vec<Request>, style: Option<Value> });

definition!(QueryTableDef { requests: Vec<Request>, has_search_bar: Option<SearchBar> });

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SearchBar {
    Always,
    Never,
    Auto,
}

definition!(SunburstDef { requests: Vec<Request>, hide_total: Option<bool>, legend: Option<SunburstLegend> });

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SunburstLegend {
    #[serde(rename = "type")]
    pub(crate) kind: SunburstLegendType,
    pub(crate) hide_value: Option<bool>,
    pub(crate) hide_percent: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SunburstLegendType {
    Table,
    Inline,
    None,
    Automatic,
}

definition!(HeatmapDef {
    requests: Vec<Request>,
    events: Option<Vec<Value>>,
    legend_size: Option<String>,
    show_legend: Option<bool>,
    yaxis: Option<Value>,
});

definition!(DistributionDef {
    requests: Vec<Request>,
    xaxis: Option<Value>,
    yaxis: Option<Value>,
    markers: Option<Vec<Value>>,
    legend_size: Option<String>,
    show_legend: Option<bool>,
});

definition!(LogStreamDef {
    indexes: Option<Vec<String>>,
    logset: Option<String>,
    query: Option<String>,
    columns: Option<Vec<String>>,
    show_date_column: Option<bool>,
    show_message_column: Option<bool>,
    message_display: Option<MessageDisplay>,
    sort: Option<LogStreamSort>,
});

#[derive(Debug, Deserialize)]
pub(crate) enum MessageDisplay {
    #[serde(rename = "inline")]
    Inline,
    #[serde(rename = "expanded-md")]
    ExpandedMd,
    #[serde(rename = "expanded-lg")]
    ExpandedLg,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogStreamSort {
    pub(crate) column: String,
    pub(crate) order: SortOrder,
}

definition!(ListStreamDef {
    requests: Vec<ListStreamRequest>,
    show_legend: Option<bool>,
    legend_size: Option<String>,
});

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListStreamRequest {
    pub(crate) columns: Vec<ListStreamColumn>,
    pub(crate) query: ListStreamQuery,
    pub(crate) response_format: ListStreamResponseFormat,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListStreamColumn {
    pub(crate) field: String,
    pub(crate) width: ColumnWidth,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ColumnWidth {
    Auto,
    Compact,
    Full,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ListStreamResponseFormat {
    EventList,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListStreamQuery {
    pub(crate) data_source: ListStreamSource,
    pub(crate) query_string: String,
    pub(crate) indexes: Option<Vec<String>>,
    pub(crate) storage: Option<String>,
    pub(crate) event_size: Option<EventSize>,
    pub(crate) sort: Option<Value>,
    pub(crate) compute: Option<Vec<Value>>,
    pub(crate) group_by: Option<Vec<Value>>,
    pub(crate) clustering_pattern_field_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::enum_variant_names)] // Datadog's names
pub(crate) enum ListStreamSource {
    LogsStream,
    AuditStream,
    CiPipelineStream,
    CiTestStream,
    RumIssueStream,
    ApmIssueStream,
    TraceStream,
    LogsIssueStream,
    LogsPatternStream,
    LogsTransactionStream,
    EventStream,
    RumStream,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EventSize {
    S,
    L,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoteDef {
    pub(crate) content: String,
    pub(crate) background_color: Option<String>,
    pub(crate) font_size: Option<String>,
    pub(crate) text_align: Option<TextAlign>,
    pub(crate) vertical_align: Option<VerticalAlign>,
    pub(crate) show_tick: Option<bool>,
    pub(crate) tick_pos: Option<String>,
    pub(crate) tick_edge: Option<TickEdge>,
    pub(crate) has_padding: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum VerticalAlign {
    Center,
    Top,
    Bottom,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TickEdge {
    Bottom,
    Left,
    Right,
    Top,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FreeTextDef {
    pub(crate) text: String,
    pub(crate) color: Option<String>,
    pub(crate) font_size: Option<String>,
    pub(crate) text_align: Option<TextAlign>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupDef {
    pub(crate) layout_type: LayoutType,
    /// Checked one by one, like the dashboard's.
    pub(crate) widgets: Vec<Value>,
    pub(crate) title: Option<String>,
    pub(crate) title_align: Option<TextAlign>,
    pub(crate) background_color: Option<String>,
    pub(crate) banner_img: Option<String>,
    pub(crate) show_title: Option<bool>,
}

definition!(AlertGraphDef {
    alert_id: String,
    viz_type: AlertVizType
});

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AlertVizType {
    Timeseries,
    Toplist,
}

definition!(AlertValueDef {
    alert_id: String,
    precision: Option<u32>,
    unit: Option<String>,
    text_align: Option<TextAlign>,
});

definition!(CheckStatusDef {
    check: String,
    grouping: CheckGrouping,
    group: Option<String>,
    group_by: Option<Vec<String>>,
    tags: Option<Vec<String>>,
});

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CheckGrouping {
    Check,
    Cluster,
}

definition!(ChangeDef { requests: Vec<Request> });

definition!(ScatterplotDef {
    requests: ScatterplotRequests,
    xaxis: Option<Value>,
    yaxis: Option<Value>,
    color_by_groups: Option<Vec<String>>,
});

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScatterplotRequests {
    pub(crate) x: Option<Request>,
    pub(crate) y: Option<Request>,
    pub(crate) table: Option<Request>,
}

definition!(TreemapDef {
    requests: Vec<Request>,
    color_by: Option<String>,
    group_by: Option<String>,
    size_by: Option<String>,
});

definition!(GeomapDef { requests: Vec<Request>, style: Value, view: Value });

definition!(HostmapDef {
    requests: HostmapRequests,
    node_type: Option<NodeType>,
    no_metric_hosts: Option<bool>,
    no_group_hosts: Option<bool>,
    group: Option<Vec<String>>,
    scope: Option<Vec<String>>,
    style: Option<Value>,
    notes: Option<String>,
});

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostmapRequests {
    pub(crate) fill: Option<Request>,
    pub(crate) size: Option<Request>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NodeType {
    Host,
    Container,
}

definition!(ManageStatusDef {
    query: String,
    summary_type: Option<SummaryType>,
    sort: Option<String>,
    display_format: Option<DisplayFormat>,
    color_preference: Option<ColorPreference>,
    hide_zero_counts: Option<bool>,
    show_last_triggered: Option<bool>,
    show_priority: Option<bool>,
    count: Option<u64>,
    start: Option<u64>,
});

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SummaryType {
    Monitors,
    Groups,
    Combined,
}

#[derive(Debug, Deserialize)]
pub(crate) enum DisplayFormat {
    #[serde(rename = "counts")]
    Counts,
    #[serde(rename = "countsAndList")]
    CountsAndList,
    #[serde(rename = "list")]
    List,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ColorPreference {
    Background,
    Text,
}

definition!(SloDef {
    view_type: String,
    slo_id: Option<String>,
    view_mode: Option<SloViewMode>,
    time_windows: Option<Vec<SloTimeWindow>>,
    show_error_budget: Option<bool>,
    global_time_target: Option<String>,
    additional_query_filters: Option<String>,
});

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SloViewMode {
    Overall,
    Component,
    Both,
}

#[derive(Debug, Deserialize)]
pub(crate) enum SloTimeWindow {
    #[serde(rename = "7d")]
    Days7,
    #[serde(rename = "30d")]
    Days30,
    #[serde(rename = "90d")]
    Days90,
    #[serde(rename = "week_to_date")]
    WeekToDate,
    #[serde(rename = "previous_week")]
    PreviousWeek,
    #[serde(rename = "month_to_date")]
    MonthToDate,
    #[serde(rename = "previous_month")]
    PreviousMonth,
    #[serde(rename = "global_time")]
    GlobalTime,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImageDef {
    pub(crate) url: String,
    pub(crate) url_dark_theme: Option<String>,
    pub(crate) sizing: Option<ImageSizing>,
    pub(crate) margin: Option<String>,
    pub(crate) has_background: Option<bool>,
    pub(crate) has_border: Option<bool>,
    pub(crate) horizontal_align: Option<TextAlign>,
    pub(crate) vertical_align: Option<VerticalAlign>,
}

#[derive(Debug, Deserialize)]
pub(crate) enum ImageSizing {
    #[serde(rename = "fill")]
    Fill,
    #[serde(rename = "contain")]
    Contain,
    #[serde(rename = "cover")]
    Cover,
    #[serde(rename = "none")]
    None,
    #[serde(rename = "scale-down")]
    ScaleDown,
    #[serde(rename = "zoom")]
    Zoom,
    #[serde(rename = "fit")]
    Fit,
    #[serde(rename = "center")]
    Center,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IframeDef {
    pub(crate) url: String,
}

definition!(EventStreamDef {
    query: String,
    event_size: Option<EventSize>,
    tags_execution: Option<String>,
});

definition!(EventTimelineDef { query: String, tags_execution: Option<String> });

definition!(TraceServiceDef {
    env: String,
    service: String,
    span_name: String,
    show_hits: Option<bool>,
    show_errors: Option<bool>,
    show_latency: Option<bool>,
    show_breakdown: Option<bool>,
    show_distribution: Option<bool>,
    show_resource_list: Option<bool>,
    size_format: Option<SizeFormat>,
    display_format: Option<String>,
});

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SizeFormat {
    Small,
    Medium,
    Large,
}

definition!(TopologyMapDef { requests: Vec<TopologyRequest> });

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopologyRequest {
    pub(crate) query: Option<TopologyQuery>,
    pub(crate) request_type: Option<TopologyRequestType>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopologyQuery {
    pub(crate) data_source: Option<TopologyDataSource>,
    pub(crate) service: Option<String>,
    pub(crate) filters: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TopologyDataSource {
    DataStreams,
    ServiceMap,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TopologyRequestType {
    Topology,
}

definition!(FunnelDef { requests: Vec<FunnelRequest> });

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FunnelRequest {
    pub(crate) query: FunnelQuery,
    pub(crate) request_type: FunnelRequestType,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FunnelQuery {
    pub(crate) data_source: FunnelSource,
    pub(crate) query_string: String,
    pub(crate) steps: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FunnelSource {
    Rum,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FunnelRequestType {
    Funnel,
}

definition!(ServicemapDef { service: String, filters: Vec<String> });

/// A parsed widget definition (only what later checks need).
#[derive(Debug)]
pub(crate) enum Definition {
    /// A group, whose widgets are checked one by one.
    Group(GroupDef),
    /// Any other widget.
    Other,
}

/// Checks a widget `definition` of type `kind` (the `type` key removed from `definition`).
/// The error pointer is relative to the definition.
pub(crate) fn parse_widget_definition(
    kind: &str,
    definition: &Value,
) -> Result<Definition, ModelError> {
    let mut body = definition.clone();
    if let Value::Object(map) = &mut body {
        map.remove("type");
    }
    fn ok<T>(result: Result<T, ModelError>) -> Result<Definition, ModelError> {
        result.map(|_| Definition::Other)
    }
    match kind {
        "timeseries" => ok(parse::<TimeseriesDef>(&body)),
        "query_value" => ok(parse::<QueryValueDef>(&body)),
        "toplist" => ok(parse::<ToplistDef>(&body)),
        "query_table" => ok(parse::<QueryTableDef>(&body)),
        "sunburst" => ok(parse::<SunburstDef>(&body)),
        "heatmap" => ok(parse::<HeatmapDef>(&body)),
        "distribution" => ok(parse::<DistributionDef>(&body)),
        "log_stream" => ok(parse::<LogStreamDef>(&body)),
        "list_stream" => ok(parse::<ListStreamDef>(&body)),
        "note" => ok(parse::<NoteDef>(&body)),
        "free_text" => ok(parse::<FreeTextDef>(&body)),
        "group" => parse::<GroupDef>(&body).map(Definition::Group),
        "alert_graph" => ok(parse::<AlertGraphDef>(&body)),
        "alert_value" => ok(parse::<AlertValueDef>(&body)),
        "check_status" => ok(parse::<CheckStatusDef>(&body)),
        "change" => ok(parse::<ChangeDef>(&body)),
        "scatterplot" => ok(parse::<ScatterplotDef>(&body)),
        "treemap" => ok(parse::<TreemapDef>(&body)),
        "geomap" => ok(parse::<GeomapDef>(&body)),
        "hostmap" => ok(parse::<HostmapDef>(&body)),
        "manage_status" => ok(parse::<ManageStatusDef>(&body)),
        "slo" => ok(parse::<SloDef>(&body)),
        "image" => ok(parse::<ImageDef>(&body)),
        "iframe" => ok(parse::<IframeDef>(&body)),
        "event_stream" => ok(parse::<EventStreamDef>(&body)),
        "event_timeline" => ok(parse::<EventTimelineDef>(&body)),
        "trace_service" => ok(parse::<TraceServiceDef>(&body)),
        "topology_map" => ok(parse::<TopologyMapDef>(&body)),
        "funnel" => ok(parse::<FunnelDef>(&body)),
        "servicemap" => ok(parse::<ServicemapDef>(&body)),
        other => Err(ModelError {
            pointer: "/type".to_owned(),
            message: format!(
                "unknown widget type `{other}`{}, expected one of {}",
                if other == "pie" {
                    " (Datadog has no pie widget: use `sunburst`)"
                } else {
                    ""
                },
                WIDGET_TYPES.join(", ")
            ),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Monitors
// ---------------------------------------------------------------------------------------------

/// A monitor (`/api/v1/monitor`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Monitor {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: MonitorType,
    pub(crate) query: String,
    pub(crate) message: Option<String>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) options: Option<MonitorOptions>,
    pub(crate) priority: Option<Priority>,
    pub(crate) restricted_roles: Option<Vec<String>>,
    pub(crate) draft_status: Option<DraftStatus>,
    // Read-only fields Datadog returns (present in exported monitors).
    pub(crate) id: Option<i64>,
    pub(crate) created: Option<String>,
    pub(crate) modified: Option<String>,
    pub(crate) creator: Option<Value>,
    pub(crate) deleted: Option<Value>,
    pub(crate) multi: Option<bool>,
    pub(crate) org_id: Option<i64>,
    pub(crate) overall_state: Option<String>,
    pub(crate) overall_state_modified: Option<String>,
    pub(crate) matching_downtimes: Option<Value>,
    pub(crate) state: Option<Value>,
}

/// Every monitor `type` Datadog accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum MonitorType {
    #[serde(rename = "composite")]
    Composite,
    #[serde(rename = "event alert")]
    EventAlert,
    #[serde(rename = "event-v2 alert")]
    EventV2Alert,
    #[serde(rename = "log alert")]
    LogAlert,
    #[serde(rename = "metric alert")]
    MetricAlert,
    #[serde(rename = "process alert")]
    ProcessAlert,
    #[serde(rename = "query alert")]
    QueryAlert,
    #[serde(rename = "rum alert")]
    RumAlert,
    #[serde(rename = "service check")]
    ServiceCheck,
    #[serde(rename = "synthetics alert")]
    SyntheticsAlert,
    #[serde(rename = "trace-analytics alert")]
    TraceAnalyticsAlert,
    #[serde(rename = "slo alert")]
    SloAlert,
    #[serde(rename = "audit alert")]
    AuditAlert,
    #[serde(rename = "ci-pipelines alert")]
    CiPipelinesAlert,
    #[serde(rename = "ci-tests alert")]
    CiTestsAlert,
    #[serde(rename = "error-tracking alert")]
    ErrorTrackingAlert,
    #[serde(rename = "database-monitoring alert")]
    DatabaseMonitoringAlert,
    #[serde(rename = "network-performance alert")]
    NetworkPerformanceAlert,
    #[serde(rename = "cost alert")]
    CostAlert,
}

/// A monitor priority, 1 (highest) to 5.
#[derive(Debug, Deserialize)]
#[serde(try_from = "i64")]
pub(crate) struct Priority(pub(crate) i64);

impl TryFrom<i64> for Priority {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        if (1..=5).contains(&value) {
            Ok(Priority(value))
        } else {
            Err(format!(
                "invalid priority {value}, expected 1 (highest) to 5"
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DraftStatus {
    Draft,
    Published,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MonitorOptions {
    pub(crate) thresholds: Option<Thresholds>,
    pub(crate) threshold_windows: Option<ThresholdWindows>,
    pub(crate) notify_no_data: Option<bool>,
    pub(crate) no_data_timeframe: Option<u64>,
    pub(crate) notify_audit: Option<bool>,
    pub(crate) include_tags: Option<bool>,
    pub(crate) renotify_interval: Option<u64>,
    pub(crate) renotify_occurrences: Option<u64>,
    pub(crate) renotify_statuses: Option<Vec<RenotifyStatus>>,
    pub(crate) escalation_message: Option<String>,
    pub(crate) evaluation_delay: Option<u64>,
    pub(crate) new_group_delay: Option<u64>,
    pub(crate) new_host_delay: Option<u64>,
    pub(crate) require_full_window: Option<bool>,
    pub(crate) timeout_h: Option<u64>,
    pub(crate) on_missing_data: Option<OnMissingData>,
    pub(crate) notification_preset_name: Option<NotificationPreset>,
    pub(crate) enable_logs_sample: Option<bool>,
    pub(crate) enable_samples: Option<bool>,
    pub(crate) groupby_simple_monitor: Option<bool>,
    pub(crate) group_retention_duration: Option<String>,
    pub(crate) notify_by: Option<Vec<String>>,
    pub(crate) silenced: Option<Value>,
    pub(crate) locked: Option<bool>,
    pub(crate) min_failure_duration: Option<u64>,
    pub(crate) min_location_failed: Option<u64>,
    pub(crate) scheduling_options: Option<Value>,
    pub(crate) variables: Option<Vec<Value>>,
    pub(crate) aggregation: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Thresholds {
    pub(crate) critical: Option<f64>,
    pub(crate) warning: Option<f64>,
    pub(crate) ok: Option<f64>,
    pub(crate) unknown: Option<f64>,
    pub(crate) critical_recovery: Option<f64>,
    pub(crate) warning_recovery: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ThresholdWindows {
    pub(crate) recovery_window: Option<String>,
    pub(crate) trigger_window: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RenotifyStatus {
    Alert,
    Warn,
    #[serde(rename = "no data")]
    NoData,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OnMissingData {
    Default,
    ShowNoData,
    ShowAndNotifyNoData,
    Resolve,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NotificationPreset {
    ShowAll,
    HideQuery,
    HideHandles,
    HideAll,
}

// ---------------------------------------------------------------------------------------------
// Cloud SIEM detection rules
// ---------------------------------------------------------------------------------------------

/// A Cloud SIEM detection rule (`/api/v2/security_monitoring/rules`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rule {
    pub(crate) name: String,
    pub(crate) message: String,
    #[serde(rename = "isEnabled")]
    pub(crate) is_enabled: bool,
    #[serde(rename = "type")]
    pub(crate) kind: Option<RuleType>,
    pub(crate) queries: Vec<RuleQuery>,
    pub(crate) cases: Vec<RuleCase>,
    pub(crate) options: RuleOptions,
    pub(crate) tags: Option<Vec<String>>,
    #[serde(rename = "hasExtendedTitle")]
    pub(crate) has_extended_title: Option<bool>,
    pub(crate) filters: Option<Vec<RuleFilter>>,
    #[serde(rename = "groupSignalsBy")]
    pub(crate) group_signals_by: Option<Vec<String>>,
    #[serde(rename = "referenceTables")]
    pub(crate) reference_tables: Option<Vec<Value>>,
    #[serde(rename = "thirdPartyCases")]
    pub(crate) third_party_cases: Option<Vec<Value>>,
    // Read-only fields Datadog returns (present in exported rules).
    pub(crate) id: Option<String>,
    #[serde(rename = "createdAt")]
    pub(crate) created_at: Option<i64>,
    #[serde(rename = "creationAuthorId")]
    pub(crate) creation_author_id: Option<i64>,
    #[serde(rename = "updateAuthorId")]
    pub(crate) update_author_id: Option<i64>,
    #[serde(rename = "isDefault")]
    pub(crate) is_default: Option<bool>,
    #[serde(rename = "isDeleted")]
    pub(crate) is_deleted: Option<bool>,
    #[serde(rename = "isDeprecated")]
    pub(crate) is_deprecated: Option<bool>,
    pub(crate) version: Option<i64>,
    #[serde(rename = "defaultTags")]
    pub(crate) default_tags: Option<Vec<String>>,
    pub(crate) blocking: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RuleType {
    LogDetection,
    SignalCorrelation,
    WorkloadSecurity,
    ApplicationSecurity,
    InfrastructureConfiguration,
    CloudConfiguration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleQuery {
    pub(crate) query: String,
    pub(crate) name: Option<String>,
    pub(crate) aggregation: Option<RuleAggregation>,
    #[serde(rename = "groupByFields")]
    pub(crate) group_by_fields: Option<Vec<String>>,
    #[serde(rename = "distinctFields")]
    pub(crate) distinct_fields: Option<Vec<String>>,
    pub(crate) metric: Option<String>,
    pub(crate) metrics: Option<Vec<String>>,
    #[serde(rename = "hasOptionalGroupByFields")]
    pub(crate) has_optional_group_by_fields: Option<bool>,
    #[serde(rename = "dataSource")]
    pub(crate) data_source: Option<RuleDataSource>,
}

/// `queries[].aggregation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RuleAggregation {
    Count,
    Cardinality,
    Sum,
    Max,
    NewValue,
    GeoData,
    EventCount,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RuleDataSource {
    Logs,
    Audit,
    AppSecSpans,
    Spans,
    SecurityRuntime,
    Network,
    Events,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleCase {
    pub(crate) status: CaseStatus,
    pub(crate) name: Option<String>,
    pub(crate) condition: Option<String>,
    pub(crate) notifications: Option<Vec<String>>,
    pub(crate) actions: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CaseStatus {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleFilter {
    pub(crate) action: FilterAction,
    pub(crate) query: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FilterAction {
    Require,
    Suppress,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleOptions {
    #[serde(rename = "detectionMethod")]
    pub(crate) detection_method: Option<DetectionMethod>,
    #[serde(rename = "evaluationWindow")]
    pub(crate) evaluation_window: Option<Window>,
    #[serde(rename = "keepAlive")]
    pub(crate) keep_alive: Option<Window>,
    #[serde(rename = "maxSignalDuration")]
    pub(crate) max_signal_duration: Option<Window>,
    #[serde(rename = "newValueOptions")]
    pub(crate) new_value_options: Option<NewValueOptions>,
    #[serde(rename = "decreaseCriticalityBasedOnEnv")]
    pub(crate) decrease_criticality_based_on_env: Option<bool>,
    #[serde(rename = "anomalyDetectionOptions")]
    pub(crate) anomaly_detection_options: Option<Value>,
    #[serde(rename = "impossibleTravelOptions")]
    pub(crate) impossible_travel_options: Option<Value>,
    #[serde(rename = "hardcodedEvaluatorType")]
    pub(crate) hardcoded_evaluator_type: Option<String>,
    #[serde(rename = "thirdPartyRuleOptions")]
    pub(crate) third_party_rule_options: Option<Value>,
    #[serde(rename = "sequenceDetectionOptions")]
    pub(crate) sequence_detection_options: Option<Value>,
}

/// `options.detectionMethod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DetectionMethod {
    Threshold,
    NewValue,
    AnomalyDetection,
    ImpossibleTravel,
    Hardcoded,
    ThirdParty,
    AnomalyThreshold,
    SequenceDetection,
}

/// The durations (seconds) Datadog allows for `evaluationWindow`, `keepAlive` and
/// `maxSignalDuration`.
pub(crate) const WINDOWS: &[u64] = &[
    0, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
];

/// One of [`WINDOWS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "u64")]
pub(crate) struct Window(pub(crate) u64);

impl TryFrom<u64> for Window {
    type Error = String;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        if WINDOWS.contains(&value) {
            Ok(Window(value))
        } else {
            let allowed: Vec<String> = WINDOWS.iter().map(u64::to_string).collect();
            Err(format!(
                "invalid duration {value} s, expected one of {}",
                allowed.join(", ")
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewValueOptions {
    #[serde(rename = "forgetAfter")]
    pub(crate) forget_after: Option<OneOf<ForgetAfter>>,
    #[serde(rename = "learningDuration")]
    pub(crate) learning_duration: Option<OneOf<LearningDuration>>,
    #[serde(rename = "learningMethod")]
    pub(crate) learning_method: Option<LearningMethod>,
    #[serde(rename = "learningThreshold")]
    pub(crate) learning_threshold: Option<OneOf<LearningThreshold>>,
}

/// A closed set of integers, named by `S`.
pub(crate) trait IntSet {
    const NAME: &'static str;
    const VALUES: &'static [u64];
}

/// `newValueOptions.forgetAfter` (days).
#[derive(Debug)]
pub(crate) struct ForgetAfter;
impl IntSet for ForgetAfter {
    const NAME: &'static str = "forgetAfter (days)";
    const VALUES: &'static [u64] = &[1, 2, 7, 14, 21, 28];
}

/// `newValueOptions.learningDuration` (days).
#[derive(Debug)]
pub(crate) struct LearningDuration;
impl IntSet for LearningDuration {
    const NAME: &'static str = "learningDuration (days)";
    const VALUES: &'static [u64] = &[0, 1, 7];
}

/// `newValueOptions.learningThreshold`.
#[derive(Debug)]
pub(crate) struct LearningThreshold;
impl IntSet for LearningThreshold {
    const NAME: &'static str = "learningThreshold";
    const VALUES: &'static [u64] = &[0, 1];
}

/// A value of the integer set `S`.
#[derive(Debug)]
pub(crate) struct OneOf<S>(pub(crate) u64, std::marker::PhantomData<S>);

impl<'de, S: IntSet> Deserialize<'de> for OneOf<S> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(deserializer)?;
        if S::VALUES.contains(&value) {
            Ok(OneOf(value, std::marker::PhantomData))
        } else {
            let allowed: Vec<String> = S::VALUES.iter().map(u64::to_string).collect();
            Err(serde::de::Error::custom(format!(
                "invalid {} {value}, expected one of {}",
                S::NAME,
                allowed.join(", ")
            )))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LearningMethod {
    Duration,
    Threshold,
}
