//! Call assembly across a gap: what content with a hole looks like.

use super::content::GAP_MARK;
use super::response::ResponseDecoder;
use super::{CallTimes, Route};
use crate::segment::Timestamp;

/// An OpenAI chat stream's events, a gap before event `hole` (at the end when past the last),
/// content captured.
fn openai_stream_with_hole(events: &[&str], hole: usize) -> super::ResponseInfo {
    let mut d = ResponseDecoder::with_capture(Route::OpenAiChat, 200, Some("text/event-stream"), true);
    for (i, e) in events.iter().enumerate() {
        if i == hole {
            d.gap();
            d.rejoin(Timestamp(i as u64));
        }
        d.feed(format!("data: {e}\n\n").as_bytes(), Timestamp(i as u64));
    }
    if hole == events.len() {
        d.gap();
    }
    d.finish(Timestamp(99), &mut CallTimes::default())
}

fn chunk(delta: &str) -> String {
    format!(r#"{{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{{"index":0,"delta":{delta}}}]}}"#)
}

#[test]
fn content_with_a_hole_is_marked_where_the_hole_was() {
    let text = [chunk(r#"{"content":"Hel"}"#), chunk(r#"{"content":"lo"}"#), chunk(r#"{"content":" you"}"#)];
    let events: Vec<&str> = text.iter().map(String::as_str).collect();
    let whole = openai_stream_with_hole(&events, 99).content.unwrap();
    assert_eq!(whole.text, "Hello you");
    let holed = openai_stream_with_hole(&[events[0], events[2]], 1).content.unwrap();
    assert_eq!(holed.text, format!("Hel{GAP_MARK} you"));
    // A hole before any text: the text that follows may lack its start.
    let holed = openai_stream_with_hole(&[events[2]], 0).content.unwrap();
    assert_eq!(holed.text, format!("{GAP_MARK} you"));
    assert_eq!(holed.reasoning, "", "no reasoning came: nothing to mark");
}

#[test]
fn tool_call_arguments_cut_by_a_hole_are_marked() {
    let calls = [
        chunk(r#"{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"get_weather","arguments":""}}]}"#),
        chunk(r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}"#),
        chunk(r#"{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}"#),
    ];
    let events: Vec<&str> = calls.iter().map(String::as_str).collect();
    let whole = openai_stream_with_hole(&events, 99);
    assert_eq!(whole.tool_calls[0].arguments.as_deref(), Some(r#"{"city":"Paris"}"#));
    let holed = openai_stream_with_hole(&[events[0], events[1]], 2);
    // Marked after the part seen (the fragments lost after it are not known).
    let args = holed.tool_calls[0].arguments.clone().unwrap();
    assert_eq!(args, format!("{{\"city\":{GAP_MARK}"));
    assert_eq!(holed.content.unwrap().tool_calls[0].2.as_deref(), Some(args.as_str()));
}
