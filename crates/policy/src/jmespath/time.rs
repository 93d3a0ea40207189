//! Kyverno's time JMESPath functions. Times are RFC 3339 strings, durations
//! are Go duration strings; layouts use Go's reference-time notation.

use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Timelike,
    Utc,
};
use jmespath::Runtime;
use jmespath::functions::ArgumentType as A;
use serde_json::Value;

use super::{arg_str, register_function};
use crate::duration::{format_duration, parse_duration};

pub(super) fn register(rt: &mut Runtime) {
    register_function(rt, "time_now", vec![], None, |_| {
        Ok(rfc3339(Utc::now().fixed_offset()))
    });
    register_function(rt, "time_now_utc", vec![], None, |_| {
        Ok(rfc3339(Utc::now().fixed_offset()))
    });
    register_function(rt, "time_add", vec![A::String, A::String], None, time_add);
    register_function(rt, "time_after", vec![A::String, A::String], None, |a| {
        Ok(Value::Bool(
            parse_time(arg_str(a, 0)?)? > parse_time(arg_str(a, 1)?)?,
        ))
    });
    register_function(rt, "time_before", vec![A::String, A::String], None, |a| {
        Ok(Value::Bool(
            parse_time(arg_str(a, 0)?)? < parse_time(arg_str(a, 1)?)?,
        ))
    });
    register_function(
        rt,
        "time_between",
        vec![A::String, A::String, A::String],
        None,
        time_between,
    );
    register_function(rt, "time_diff", vec![A::String, A::String], None, time_diff);
    register_function(
        rt,
        "time_since",
        vec![A::String, A::String, A::String],
        None,
        time_since,
    );
    register_function(rt, "time_to_cron", vec![A::String], None, time_to_cron);
    register_function(
        rt,
        "time_truncate",
        vec![A::String, A::String],
        None,
        time_truncate,
    );
    register_function(rt, "time_parse", vec![A::String, A::String], None, |a| {
        Ok(rfc3339(parse_with_layout(arg_str(a, 0)?, arg_str(a, 1)?)?))
    });
    register_function(rt, "time_utc", vec![A::String], None, |a| {
        Ok(rfc3339(
            parse_time(arg_str(a, 0)?)?
                .with_timezone(&Utc)
                .fixed_offset(),
        ))
    });
}

fn rfc3339(time: DateTime<FixedOffset>) -> Value {
    Value::from(time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn parse_time(text: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(text).map_err(|e| format!("invalid RFC 3339 time {text:?}: {e}"))
}

fn duration_arg(text: &str) -> Result<chrono::Duration, String> {
    let seconds = parse_duration(text).ok_or_else(|| format!("invalid duration {text:?}"))?;
    Ok(chrono::Duration::nanoseconds((seconds * 1e9).round() as i64))
}

fn seconds_between(from: DateTime<FixedOffset>, to: DateTime<FixedOffset>) -> f64 {
    let delta = to - from;
    delta
        .num_nanoseconds()
        .map_or(delta.num_seconds() as f64, |n| n as f64 / 1e9)
}

fn time_add(args: &[Value]) -> Result<Value, String> {
    let time = parse_time(arg_str(args, 0)?)?;
    Ok(rfc3339(time + duration_arg(arg_str(args, 1)?)?))
}

fn time_between(args: &[Value]) -> Result<Value, String> {
    let time = parse_time(arg_str(args, 0)?)?;
    let start = parse_time(arg_str(args, 1)?)?;
    let end = parse_time(arg_str(args, 2)?)?;
    Ok(Value::Bool(time > start && time < end))
}

fn time_diff(args: &[Value]) -> Result<Value, String> {
    let from = parse_time(arg_str(args, 0)?)?;
    let to = parse_time(arg_str(args, 1)?)?;
    Ok(Value::from(format_duration(seconds_between(from, to))))
}

fn time_since(args: &[Value]) -> Result<Value, String> {
    let layout = arg_str(args, 0)?;
    let parse = |text: &str| {
        if layout.is_empty() {
            parse_time(text)
        } else {
            parse_with_layout(layout, text)
        }
    };
    let from = parse(arg_str(args, 1)?)?;
    let to_text = arg_str(args, 2)?;
    let to = if to_text.is_empty() {
        Utc::now().fixed_offset()
    } else {
        parse(to_text)?
    };
    Ok(Value::from(format_duration(seconds_between(from, to))))
}

fn time_to_cron(args: &[Value]) -> Result<Value, String> {
    let time = parse_time(arg_str(args, 0)?)?.with_timezone(&Utc);
    Ok(Value::from(format!(
        "{} {} {} {} {}",
        time.minute(),
        time.hour(),
        time.day(),
        time.month(),
        time.weekday().num_days_from_sunday()
    )))
}

fn time_truncate(args: &[Value]) -> Result<Value, String> {
    let time = parse_time(arg_str(args, 0)?)?;
    let step = duration_arg(arg_str(args, 1)?)?;
    let step_nanos = step.num_nanoseconds().unwrap_or(0);
    if step_nanos <= 0 {
        return Ok(rfc3339(time));
    }
    let nanos = time.timestamp_nanos_opt().ok_or("time out of range")?;
    let truncated = nanos - nanos.rem_euclid(step_nanos);
    let result = Utc.timestamp_nanos(truncated).with_timezone(time.offset());
    Ok(rfc3339(result))
}

/// Parses `text` with a Go reference-time layout such as `2006-01-02`.
fn parse_with_layout(layout: &str, text: &str) -> Result<DateTime<FixedOffset>, String> {
    if layout == "2006-01-02T15:04:05Z07:00" {
        return parse_time(text);
    }
    let format = go_layout_to_strftime(layout);
    let has_zone = format.contains("%z") || format.contains("%:z");
    let has_time = format.contains("%H") || format.contains("%I") || format.contains("%M");
    let failure =
        |e: chrono::ParseError| format!("cannot parse {text:?} with layout {layout:?}: {e}");
    if has_zone {
        return DateTime::parse_from_str(text, &format).map_err(failure);
    }
    let naive = if has_time {
        NaiveDateTime::parse_from_str(text, &format).map_err(failure)?
    } else {
        NaiveDate::parse_from_str(text, &format)
            .map_err(failure)?
            .and_hms_opt(0, 0, 0)
            .ok_or("invalid date")?
    };
    Ok(Utc.from_utc_datetime(&naive).fixed_offset())
}

fn go_layout_to_strftime(layout: &str) -> String {
    const TOKENS: &[(&str, &str)] = &[
        ("January", "%B"),
        ("Monday", "%A"),
        ("2006", "%Y"),
        ("Z07:00", "%:z"),
        ("-07:00", "%:z"),
        ("-0700", "%z"),
        (".000000000", "%.9f"),
        (".000000", "%.6f"),
        (".000", "%.3f"),
        (".999999999", "%.f"),
        ("Jan", "%b"),
        ("Mon", "%a"),
        ("MST", "%Z"),
        ("01", "%m"),
        ("02", "%d"),
        ("_2", "%e"),
        ("15", "%H"),
        ("03", "%I"),
        ("04", "%M"),
        ("05", "%S"),
        ("06", "%y"),
        ("PM", "%p"),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (go, strftime) in TOKENS {
            if let Some(after) = rest.strip_prefix(go) {
                out.push_str(strftime);
                rest = after;
                continue 'outer;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            if c == '%' {
                out.push_str("%%");
            } else {
                out.push(c);
            }
        }
        rest = chars.as_str();
    }
    out
}
