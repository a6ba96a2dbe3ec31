//! The API described as OpenAPI 3.1, served at `/api/v1/openapi.json`.
//!
//! The document is written by hand in `openapi.json` beside this file. A test holds it to
//! the router: every route has its path and method in the document and every operation of the
//! document is a route. The integration tests validate it with `openapi-spec-validator`.

/// The OpenAPI document.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The `(METHOD, path)` of every operation in the document, sorted.
pub fn operations() -> Result<Vec<(String, String)>, serde_json::Error> {
    const METHODS: [&str; 8] = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
    let doc: serde_json::Value = serde_json::from_str(DOCUMENT)?;
    let mut ops = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
                ops.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    ops.sort();
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_and_the_router_name_the_same_routes() {
        let mut routes: Vec<(String, String)> =
            crate::api::route_table().into_iter().map(|(m, p)| (m.to_string(), p.to_owned())).collect();
        routes.sort();
        let documented = operations().unwrap();
        let undocumented: Vec<_> = routes.iter().filter(|r| !documented.contains(r)).collect();
        let unrouted: Vec<_> = documented.iter().filter(|d| !routes.contains(d)).collect();
        assert!(undocumented.is_empty(), "routes missing from openapi.json: {undocumented:?}");
        assert!(unrouted.is_empty(), "operations in openapi.json without a route: {unrouted:?}");
    }

    #[test]
    fn every_operation_has_an_id_and_every_change_documents_its_errors() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        for (method, path) in operations().unwrap() {
            let op = &doc["paths"][&path][method.to_ascii_lowercase()];
            assert!(op["operationId"].is_string(), "{method} {path} has no operationId");
            if method != "GET" {
                for status in ["401", "403", "412", "422"] {
                    assert!(
                        op["responses"][status].is_object(),
                        "{method} {path} does not document {status}"
                    );
                }
            }
        }
    }
}
