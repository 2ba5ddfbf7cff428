//! JSON commands checked against their JSON Schema before they are decoded (feature
//! `json-schema`, which also brings by-name dispatch): field-level errors for a request body, as
//! an API answers them.

use crate::command::Command;
use crate::error::ValidationErrors;

/// Checks `json` against `C`'s JSON Schema, when it has one.
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
        let mut field = path.trim_start_matches('/').replace('/', ".");
        // A missing property is that field's problem, not the whole object's.
        if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind() {
            let name = property.as_str().map_or_else(|| property.to_string(), str::to_owned);
            field = if field.is_empty() { name } else { format!("{field}.{name}") };
        }
        errors.push(field, "schema", error.to_string());
    }
    errors.into_result()
}
