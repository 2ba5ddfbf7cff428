//! What a chain reads, without its code ([`ChainShape`]): the current version, the types read
//! at it, and the (type, version) of every step. The schema registry stores it, so that a
//! command-line tool can tell which stored events the application can read.

use serde::{Deserialize, Serialize};

/// One step of a chain: it reads `event_type` at schema version `from`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Step {
    /// The type the step reads.
    pub event_type: String,
    /// The version it reads (it makes version `from + 1`).
    pub from: u32,
}

/// A chain without its code ([`Chain::shape`](crate::Chain::shape)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainShape {
    /// The schema version events are read at.
    pub version: u32,
    /// The types read at that version (empty: not listed, any type).
    pub event_types: Vec<String>,
    /// Every step, in order.
    pub steps: Vec<Step>,
}

impl ChainShape {
    /// Whether the chain reads a stored `event_type` at schema `version`; `Err` says why not.
    /// The same rule as [`Chain::apply`](crate::Chain::apply): a type with steps needs one at
    /// every version below the current one it can be at; a type without steps reads the same at
    /// every version, if the event type lists it.
    ///
    /// # Errors
    ///
    /// Why no chain of this shape reads the event, as a sentence.
    pub fn reads(&self, event_type: &str, version: u32) -> Result<(), String> {
        if version > self.version {
            return Err(format!(
                "written at schema version {version}, newer than the application's version {}",
                self.version
            ));
        }
        let versioned = self.steps.iter().any(|step| step.event_type == event_type);
        if version < self.version && versioned {
            if self.steps.iter().any(|step| step.event_type == event_type && step.from == version) {
                return Ok(());
            }
            return Err(format!("no upcaster reads `{event_type}` at schema version {version}"));
        }
        if self.event_types.is_empty() || self.event_types.iter().any(|name| name == event_type) {
            return Ok(());
        }
        Err(format!("`{event_type}` is not a type the application reads, and no upcaster reads it"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> ChainShape {
        let step = |event_type: &str, from| Step { event_type: event_type.to_owned(), from };
        ChainShape {
            version: 3,
            event_types: vec!["Deposited".into(), "Opened".into()],
            steps: vec![step("MoneyDeposited", 1), step("Deposited", 2)],
        }
    }

    #[test]
    fn reads_what_a_chain_of_that_shape_reads() {
        let shape = shape();
        assert_eq!(shape.reads("MoneyDeposited", 1), Ok(()));
        assert_eq!(shape.reads("Deposited", 2), Ok(()));
        assert_eq!(shape.reads("Deposited", 3), Ok(()));
        assert_eq!(shape.reads("Opened", 1), Ok(()));
        assert!(shape.reads("Deposited", 1).unwrap_err().contains("no upcaster reads `Deposited` at schema version 1"));
        assert!(shape.reads("Opened", 4).unwrap_err().contains("newer"));
        assert!(shape.reads("Closed", 3).unwrap_err().contains("not a type the application reads"));
    }
}
