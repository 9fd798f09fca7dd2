//! The metrics APIs: `POST /api/v2/series`, `POST /api/v1/series`,
//! `POST /api/v1/distribution_points`.

use serde_json::Value;

use crate::codec;
use crate::config::MetricLimits;
use crate::http::{self, Resp};
use crate::logs::decode_error;
use crate::model::{MetricApi, MetricPoint, MetricSeries};
use crate::server::Req;
use crate::state::{Shared, lock};

pub(crate) fn handle(shared: &Shared, req: &mut Req<'_>, api: MetricApi) -> Resp {
    let limits: MetricLimits = match api {
        MetricApi::SeriesV2 => shared.settings.series_v2,
        MetricApi::SeriesV1 => shared.settings.series_v1,
        MetricApi::Distribution => shared.settings.distribution,
    };
    if !codec::is_identity(req.encoding())
        && let Some(max) = limits.max_compressed_bytes
        && req.body.len() > max
    {
        return req.refuse(
            413,
            format!(
                "Payload too large: {} bytes compressed, the limit is {max}",
                req.body.len()
            ),
        );
    }
    let cap = limits
        .max_uncompressed_bytes
        .unwrap_or(usize::MAX)
        .min(shared.settings.max_decoded_bytes);
    // The v1 APIs take deflate or gzip; only v2 takes zstd.
    if api != MetricApi::SeriesV2
        && let Some(enc) = req.encoding()
        && enc.trim().to_ascii_lowercase().starts_with("zstd")
    {
        return decode_error(req, codec::DecodeError::Unsupported(enc.to_owned()), cap);
    }
    let decoded = match codec::decode(req.encoding(), req.body.clone(), cap) {
        Ok(d) => d,
        Err(e) => return decode_error(req, e, cap),
    };
    req.rec.uncompressed_bytes = Some(decoded.len());
    let body: Value = match serde_json::from_slice(&decoded) {
        Ok(v) => v,
        Err(e) => return req.refuse(400, format!("invalid JSON: {e}")),
    };
    let now = chrono::Utc::now().timestamp();
    let series = match parse(&body, api, req.rec.seq, now) {
        Ok(s) => s,
        Err(e) => return req.refuse(400, e),
    };
    req.rec.items = Some(series.len());
    {
        let mut rec = lock(&shared.rec);
        rec.stats.series += series.len() as u64;
        rec.stats.metric_points += series.iter().map(|s| s.points.len() as u64).sum::<u64>();
        rec.stats.metric_points_out_of_window += series
            .iter()
            .map(|s| {
                s.points
                    .iter()
                    .filter(|p| !s.in_window(p.timestamp))
                    .count() as u64
            })
            .sum::<u64>();
        rec.series.extend(series);
    }
    shared.notify();
    match api {
        MetricApi::SeriesV2 => http::json_static(202, r#"{"errors":[]}"#),
        _ => http::json_static(202, r#"{"status":"ok"}"#),
    }
}

fn parse(body: &Value, api: MetricApi, seq: u64, now: i64) -> Result<Vec<MetricSeries>, String> {
    let list = body
        .get("series")
        .and_then(Value::as_array)
        .ok_or("body must be a JSON object with a `series` array")?;
    list.iter()
        .enumerate()
        .map(|(i, s)| parse_one(s, api, seq, now).map_err(|e| format!("series[{i}]: {e}")))
        .collect()
}

fn parse_one(s: &Value, api: MetricApi, seq: u64, now: i64) -> Result<MetricSeries, String> {
    let metric = s
        .get("metric")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or("`metric` must be a non-empty string")?
        .to_owned();
    let tags = match s.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_owned)
                    .ok_or("`tags` must be strings")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`tags` must be an array of strings".into()),
    };
    let raw_points = s
        .get("points")
        .and_then(Value::as_array)
        .ok_or("`points` must be an array")?;
    let mut points = Vec::with_capacity(raw_points.len());
    for (j, p) in raw_points.iter().enumerate() {
        let bad = || format!("points[{j}] is malformed");
        match api {
            MetricApi::SeriesV2 => {
                let timestamp = p.get("timestamp").and_then(as_ts).ok_or_else(bad)?;
                let value = p.get("value").and_then(Value::as_f64).ok_or_else(bad)?;
                points.push(MetricPoint { timestamp, value });
            }
            MetricApi::SeriesV1 => {
                let pair = p.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
                let timestamp = as_ts(&pair[0]).ok_or_else(bad)?;
                let value = pair[1].as_f64().ok_or_else(bad)?;
                points.push(MetricPoint { timestamp, value });
            }
            MetricApi::Distribution => {
                let pair = p.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
                let timestamp = as_ts(&pair[0]).ok_or_else(bad)?;
                let values = pair[1].as_array().ok_or_else(bad)?;
                for v in values {
                    points.push(MetricPoint {
                        timestamp,
                        value: v.as_f64().ok_or_else(bad)?,
                    });
                }
            }
        }
    }
    let metric_type = match api {
        MetricApi::SeriesV2 => match s.get("type") {
            None | Some(Value::Null) => "unspecified".to_owned(),
            Some(t) => match t.as_u64() {
                Some(0) => "unspecified".to_owned(),
                Some(1) => "count".to_owned(),
                Some(2) => "rate".to_owned(),
                Some(3) => "gauge".to_owned(),
                _ => return Err("`type` must be 0, 1, 2 or 3".into()),
            },
        },
        MetricApi::SeriesV1 => match s.get("type").and_then(Value::as_str) {
            None => "gauge".to_owned(),
            Some(t @ ("count" | "gauge" | "rate")) => t.to_owned(),
            Some(t) => return Err(format!("`type` `{t}` is not count, gauge or rate")),
        },
        MetricApi::Distribution => "distribution".to_owned(),
    };
    let host = match api {
        MetricApi::SeriesV2 => s
            .get("resources")
            .and_then(Value::as_array)
            .and_then(|r| {
                r.iter()
                    .find(|x| x.get("type").and_then(Value::as_str) == Some("host"))
            })
            .and_then(|x| x.get("name").and_then(Value::as_str))
            .map(str::to_owned),
        _ => s.get("host").and_then(Value::as_str).map(str::to_owned),
    };
    Ok(MetricSeries {
        api,
        metric,
        metric_type,
        points,
        tags,
        host,
        unit: s.get("unit").and_then(Value::as_str).map(str::to_owned),
        interval: s.get("interval").and_then(Value::as_i64),
        request_seq: seq,
        received_at: now,
    })
}

fn as_ts(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_v2_and_distribution_shapes_parse() {
        let v2 = json!({"series":[{"metric":"a","type":1,"points":[{"timestamp":10,"value":2.5}],
            "tags":["x:y"],"resources":[{"name":"h1","type":"host"}],"unit":"event","interval":10}]});
        let s = parse(&v2, MetricApi::SeriesV2, 1, 0).unwrap();
        assert_eq!(s[0].metric_type, "count");
        assert_eq!(s[0].host.as_deref(), Some("h1"));
        assert_eq!(
            s[0].points,
            vec![MetricPoint {
                timestamp: 10,
                value: 2.5
            }]
        );
        let v1 = json!({"series":[{"metric":"b","type":"rate","points":[[10, 1.0],[20.0, 2]],"host":"h"}]});
        let s = parse(&v1, MetricApi::SeriesV1, 1, 0).unwrap();
        assert_eq!(s[0].sum(), 3.0);
        let d = json!({"series":[{"metric":"c","points":[[10,[1.0,2.0,3.0]]],"tags":[]}]});
        let s = parse(&d, MetricApi::Distribution, 1, 0).unwrap();
        assert_eq!(s[0].points.len(), 3);
        assert!(
            parse(
                &json!({"series":[{"metric":"a","type":9,"points":[]}]}),
                MetricApi::SeriesV2,
                1,
                0
            )
            .unwrap_err()
            .contains("type")
        );
        assert!(parse(&json!([1]), MetricApi::SeriesV1, 1, 0).is_err());
    }
}
