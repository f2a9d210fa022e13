//! The OpenAPI 3 document of Crier's HTTP API (chat-service and the stream route of
//! broadcast-sse), served at `/openapi.json` by every binary.

pub const DOCUMENT: &str = include_str!("../openapi/crier.json");

/// Every `(METHOD, path)` the document describes, sorted.
pub fn operations() -> Vec<(String, String)> {
    let document: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap_or_default();
    let mut operations: Vec<(String, String)> = document["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .filter(|(method, _)| *method != "parameters")
                .map(move |(method, _)| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect();
    operations.sort();
    operations
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_json_with_operations() {
        let document: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert_eq!(document["openapi"], "3.0.3");
        assert!(operations().contains(&("POST".into(), "/channels/{channel}/messages".into())));
    }
}
