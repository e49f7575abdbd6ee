//! What this replica owns right now, for `GET /assignments`. Updated from the rebalance callback
//! itself (partitions are added once assigned, and removed once their records are written and
//! committed, just before they are given up), so the answer is right at every moment.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

/// The `/assignments` answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AssignmentReport {
    pub slot: String,
    pub group: String,
    /// The group member id the coordinator gave this replica; absent until it is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    pub topic: String,
    pub partitions: Vec<i32>,
}

#[derive(Debug)]
pub struct Assignments {
    slot: String,
    group: String,
    topic: String,
    state: Mutex<Ownership>,
}

#[derive(Debug, Default)]
struct Ownership {
    member_id: Option<String>,
    partitions: BTreeSet<i32>,
}

impl Assignments {
    pub fn new(slot: &str, group: &str, topic: &str) -> Self {
        Self {
            slot: slot.to_owned(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Ownership> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns the number of partitions owned afterwards.
    pub fn add(&self, partitions: &[i32]) -> usize {
        let mut state = self.state();
        state.partitions.extend(partitions);
        state.partitions.len()
    }

    /// Returns the number of partitions owned afterwards.
    pub fn remove(&self, partitions: &[i32]) -> usize {
        let mut state = self.state();
        for p in partitions {
            state.partitions.remove(p);
        }
        state.partitions.len()
    }

    pub fn partitions(&self) -> Vec<i32> {
        self.state().partitions.iter().copied().collect()
    }

    pub fn set_member_id(&self, member_id: &str) {
        let mut state = self.state();
        if state.member_id.as_deref() != Some(member_id) {
            tracing::info!(member_id, "group member id");
            state.member_id = Some(member_id.to_owned());
        }
    }

    pub fn report(&self) -> AssignmentReport {
        let state = self.state();
        AssignmentReport {
            slot: self.slot.clone(),
            group: self.group.clone(),
            member_id: state.member_id.clone(),
            topic: self.topic.clone(),
            partitions: state.partitions.iter().copied().collect(),
        }
    }
}

/// `GET /assignments`.
pub fn router(assignments: Arc<Assignments>) -> Router {
    Router::new()
        .route("/assignments", get(report))
        .with_state(assignments)
}

async fn report(State(assignments): State<Arc<Assignments>>) -> Json<AssignmentReport> {
    Json(assignments.report())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_changes_keep_a_sorted_set() {
        let a = Assignments::new("consumer_2", "g", "t");
        assert_eq!(
            serde_json::to_value(a.report()).unwrap(),
            serde_json::json!({"slot": "consumer_2", "group": "g", "topic": "t", "partitions": []}),
            "no member id to show yet: no field"
        );
        assert_eq!(a.add(&[5, 4]), 2);
        assert_eq!(a.add(&[9]), 3);
        assert_eq!(a.remove(&[4, 7]), 2);
        a.set_member_id("m-1");
        let report = a.report();
        assert_eq!(report.partitions, [5, 9]);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"slot": "consumer_2", "group": "g", "member_id": "m-1", "topic": "t", "partitions": [5, 9]})
        );
    }
}
