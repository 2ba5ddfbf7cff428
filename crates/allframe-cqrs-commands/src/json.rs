//! JSON commands checked against their JSON Schema before they are decoded (feature
//! `json-schema`): field-level errors for a request body, as an API answers them.

use crate::command::Command;
use crate::error::ValidationErrors;

/// Checks `json` against `C`'s JSON Schema, when it has one and the feature is on.
#[cfg(feature = "json-schema")]
pub(crate) fn check_schema<C: Command>(json: &serde_json::Value) -> Result<(), ValidationErrors> {
    use std::any::TypeId;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock, PoisonError};

    static VALIDATORS: OnceLock<Mutex<HashMap<TypeId, Option<Arc<jsonschema::Validator>>>>> = OnceLock::new();
    let validators = VALIDATORS.get_or_init(Default::default);
    let validator = {
        let mut map = validators.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(TypeId::of::<C>())
            .or_insert_with(|| {
                let schema = C::json_schema()?;
                match jsonschema::validator_for(&schema) {
                    Ok(validator) => Some(Arc::new(validator)),
                    Err(error) => {
                        tracing::warn!(command = C::NAME, %error, "the command's JSON Schema does not compile; not checked");
                        None
                    }
                }
            })
            .clone()
    };
    let Some(validator) = validator else { return Ok(()) };
    let mut errors = ValidationErrors::new();
    for error in validator.iter_errors(json) {
        let path = error.instance_path().to_string();
        let field = path.trim_start_matches('/').replace('/', ".");
        errors.push(field, "schema", error.to_string());
    }
    errors.into_result()
}

/// Without the feature, JSON is only decoded (serde's errors become a `type` error).
#[cfg(not(feature = "json-schema"))]
pub(crate) fn check_schema<C: Command>(_: &serde_json::Value) -> Result<(), ValidationErrors> {
    Ok(())
}
