use ispn_xsite::json_stream::{ArraySplitter, SplitError};
use proptest::prelude::*;

fn split_in_chunks(body: &[u8], cuts: &[usize]) -> Result<Vec<String>, SplitError> {
    let mut splitter = ArraySplitter::new();
    let mut out = Vec::new();
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.sort_unstable();
    points.push(body.len());
    for end in points {
        if end < start {
            continue;
        }
        splitter.feed(&body[start..end], |e| out.push(String::from_utf8(e.to_vec()).unwrap()))?;
        start = end;
    }
    splitter.finish()?;
    Ok(out)
}

#[test]
fn splits_strings_objects_and_scalars() {
    let body = br#" [ "a", {"key":{"_type":"string","_value":"x]}"},"value":[1,2]}, 42 ,true, "q\"\\" ] "#;
    let parts = split_in_chunks(body, &[]).unwrap();
    assert_eq!(parts, vec![r#""a""#, r#"{"key":{"_type":"string","_value":"x]}"},"value":[1,2]}"#, "42", "true", r#""q\"\\""#]);
}

#[test]
fn empty_arrays_and_truncation() {
    assert_eq!(split_in_chunks(b"[]", &[]).unwrap(), Vec::<String>::new());
    assert_eq!(split_in_chunks(b"[\"a\",", &[]), Err(SplitError::Truncated));
    assert_eq!(split_in_chunks(b"{}", &[]), Err(SplitError::NotAnArray('{')));
    assert_eq!(split_in_chunks(b"[] x", &[]), Err(SplitError::TrailingData('x')));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, rng_seed: proptest::test_runner::RngSeed::Fixed(0x5173_5e1c), ..ProptestConfig::default() })]

    /// However the body is cut into chunks, the elements are the same as serde_json's.
    #[test]
    fn chunking_never_changes_the_elements(
        keys in proptest::collection::vec("[a-zA-Z0-9 \"\\\\\\]\\[{},:é]{0,12}", 0..40),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let body = serde_json::to_vec(&keys).unwrap();
        let parts = split_in_chunks(&body, &cuts).unwrap();
        let decoded: Vec<String> = parts.iter().map(|p| serde_json::from_str(p).unwrap()).collect();
        prop_assert_eq!(decoded, keys);
    }
}

#[test]
fn entries_decode_to_the_text_entry_text_gives_whatever_their_shape() {
    use ispn_xsite::entry_text;
    use ispn_xsite::json_stream::decode_entry;
    let cases = [
        r#"{"key":{"_type":"string","_value":"k\"1"},"value":{"_type":"string","_value":"v\\1\u00e9"}}"#,
        r#"{"key":"plain","value":"text"}"#,
        r#"{"key":{"_type":"string","_value":"k"},"value":{"_type":"int32","_value":5}}"#,
        r#"{"key":{"_type":"string","_value":"k"},"value":{"_type":"keycloak.LoginFailureEntity","numFailures":3,"realmId":"r"}}"#,
    ];
    for case in cases {
        let entry = decode_entry(case.as_bytes()).unwrap_or_else(|| panic!("{case}"));
        let tree: serde_json::Value = serde_json::from_str(case).unwrap();
        assert_eq!((entry.key, entry.value), (entry_text(&tree["key"]), entry_text(&tree["value"])), "{case}");
    }
    assert!(decode_entry(br#"{"key":"k"}"#).is_none(), "an entry without a value is not an entry");
}
