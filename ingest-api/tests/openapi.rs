//! `ingest-api/openapi.json` is the document the code generates; CI fails when it is stale.

use ingest_api::ApiDoc;

#[test]
fn the_committed_openapi_json_matches_the_code() {
    let generated = ApiDoc::openapi().to_pretty_json().expect("serialisable") + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).expect("write openapi.json");
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "ingest-api/openapi.json is stale: regenerate it with `UPDATE_OPENAPI=1 cargo test -p ingest-api --test openapi`"
    );
}
