use super::*;

#[test]
fn dump() {
    std::fs::write("/tmp/openapi.json", openapi().to_pretty_json().unwrap()).unwrap();
}
