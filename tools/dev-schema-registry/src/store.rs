//! The registry's state and rules, without HTTP or files: global schema ids, subjects with their
//! versions, compatibility settings.
//!
//! Schema identity: two schema texts are "the same schema" when their parsed Avro schemas serialize
//! to the same normalized JSON. That ignores whitespace, key order and how namespaces are spelled,
//! but (unlike the Avro *parsing canonical form*) keeps defaults, logical types, aliases and custom
//! attributes, which change how data is read and whether a change is compatible. Confluent keeps
//! those too.
//!
//! Deleting a subject is a soft delete: its versions are hidden (the subject disappears from
//! listings and lookups) but schema ids stay resolvable, as in Confluent, and version numbers are
//! never reused.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use crate::compatibility::{self, CompatibilityLevel};

/// The only schema type this registry supports.
pub const AVRO: &str = "AVRO";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {version} not found for subject '{subject}'.")]
    VersionNotFound { subject: String, version: u32 },
    #[error("Schema {0} not found")]
    SchemaIdNotFound(u32),
    #[error("Schema not found under subject '{0}'")]
    SchemaNotUnderSubject(String),
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
        .details.join("; ")
    )]
    Incompatible {
        subject: String,
        details: Vec<String>,
    },
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectCompatibilityNotFound(String),
}

/// A schema text that parsed as Avro, with its normalized form (see the module docs).
#[derive(Debug, Clone)]
pub struct ParsedSchema {
    text: String,
    normalized: String,
    schema: Schema,
}

impl ParsedSchema {
    /// Parses an Avro schema (JSON text). `schema_type` is Confluent's `schemaType`: `None` means
    /// AVRO; anything else is rejected because only Avro is supported.
    pub fn parse(text: &str, schema_type: Option<&str>) -> Result<Self, StoreError> {
        if let Some(other) = schema_type.filter(|t| !t.eq_ignore_ascii_case(AVRO)) {
            return Err(StoreError::InvalidSchema(format!(
                "schemaType {other:?} is not supported by this development registry; only AVRO is"
            )));
        }
        let schema = Schema::parse_str(text)
            .map_err(|e| StoreError::InvalidSchema(format!("not a valid Avro schema: {e}")))?;
        let normalized = serde_json::to_string(&schema).map_err(|e| {
            StoreError::InvalidSchema(format!("cannot normalize the Avro schema: {e}"))
        })?;
        Ok(Self {
            text: text.to_owned(),
            normalized,
            schema,
        })
    }
}

/// A registered schema: its global id and the text it was first registered with.
#[derive(Debug)]
pub struct StoredSchema {
    pub id: u32,
    pub text: String,
    normalized: String,
    schema: Schema,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SubjectVersion {
    version: u32,
    id: u32,
    deleted: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Subject {
    compatibility: Option<CompatibilityLevel>,
    versions: Vec<SubjectVersion>,
}

impl Subject {
    fn live_versions(&self) -> impl DoubleEndedIterator<Item = &SubjectVersion> {
        self.versions.iter().filter(|v| !v.deleted)
    }

    fn next_version(&self) -> u32 {
        self.versions.last().map_or(1, |v| v.version + 1)
    }
}

/// Which version of a subject a request means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    Latest,
    Number(u32),
}

impl VersionSelector {
    /// Confluent's rules: `latest` or `-1` for the latest, else an integer in [1, 2^31-1].
    pub fn parse(text: &str) -> Option<Self> {
        if text == "latest" || text == "-1" {
            return Some(Self::Latest);
        }
        match text.parse::<i32>() {
            Ok(n) if n >= 1 => Some(Self::Number(n as u32)),
            _ => None,
        }
    }
}

/// One version of a subject, as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectSchema {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// Result of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    pub id: u32,
    pub version: u32,
    /// False when the subject already had this schema (nothing changed).
    pub new_version: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    schemas: BTreeMap<u32, Arc<StoredSchema>>,
    ids_by_normalized: HashMap<String, u32>,
    subjects: BTreeMap<String, Subject>,
    compatibility: Option<CompatibilityLevel>,
    /// Bumped by every change, so callers can tell whether anything needs saving.
    revision: u64,
}

impl Registry {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Registers `schema` under `subject` (Confluent's `POST /subjects/{subject}/versions`).
    pub fn register(
        &mut self,
        subject: &str,
        schema: ParsedSchema,
    ) -> Result<Registered, StoreError> {
        let existing = self.subjects.get(subject);
        if let Some(found) = existing.and_then(|s| self.live_version_with(s, &schema.normalized)) {
            return Ok(Registered {
                id: found.id,
                version: found.version,
                new_version: false,
            });
        }
        let level = self.effective_compatibility(subject);
        let against = existing.map_or_else(Vec::new, |s| self.versions_to_check(s, level));
        let details = compatibility::incompatibilities(level, &schema.schema, &against);
        if !details.is_empty() {
            return Err(StoreError::Incompatible {
                subject: subject.to_owned(),
                details,
            });
        }

        let id = match self.ids_by_normalized.get(&schema.normalized) {
            Some(&id) => id,
            None => self.insert_schema(schema),
        };
        let entry = self.subjects.entry(subject.to_owned()).or_default();
        let version = entry.next_version();
        entry.versions.push(SubjectVersion {
            version,
            id,
            deleted: false,
        });
        self.revision += 1;
        Ok(Registered {
            id,
            version,
            new_version: true,
        })
    }

    /// Whether `schema` is registered (live) under `subject` (Confluent's `POST /subjects/{subject}`).
    pub fn lookup(
        &self,
        subject: &str,
        schema: &ParsedSchema,
    ) -> Result<SubjectSchema, StoreError> {
        let entry = self.live_subject(subject)?;
        let found = self
            .live_version_with(entry, &schema.normalized)
            .ok_or_else(|| StoreError::SchemaNotUnderSubject(subject.to_owned()))?;
        Ok(self.subject_schema(subject, found))
    }

    pub fn schema_by_id(&self, id: u32) -> Result<&StoredSchema, StoreError> {
        self.schemas
            .get(&id)
            .map(Arc::as_ref)
            .ok_or(StoreError::SchemaIdNotFound(id))
    }

    /// `(subject, version)` pairs (live only) that use schema `id`.
    pub fn subject_versions_of_schema(&self, id: u32) -> Result<Vec<(String, u32)>, StoreError> {
        self.schema_by_id(id)?;
        Ok(self
            .subjects
            .iter()
            .flat_map(|(name, s)| {
                s.live_versions()
                    .filter(|v| v.id == id)
                    .map(|v| (name.clone(), v.version))
            })
            .collect())
    }

    /// Subjects with at least one live version, sorted.
    pub fn subjects(&self) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, s)| s.live_versions().next().is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub fn versions(&self, subject: &str) -> Result<Vec<u32>, StoreError> {
        Ok(self
            .live_subject(subject)?
            .live_versions()
            .map(|v| v.version)
            .collect())
    }

    pub fn version(
        &self,
        subject: &str,
        selector: VersionSelector,
    ) -> Result<SubjectSchema, StoreError> {
        let entry = self.live_subject(subject)?;
        let found = Self::select(subject, entry, selector)?;
        Ok(self.subject_schema(subject, found))
    }

    /// Soft-deletes every live version of `subject` and returns their numbers.
    pub fn delete_subject(&mut self, subject: &str) -> Result<Vec<u32>, StoreError> {
        self.live_subject(subject)?;
        let entry = self
            .subjects
            .get_mut(subject)
            .expect("live_subject found it");
        let mut deleted = Vec::new();
        for version in entry.versions.iter_mut().filter(|v| !v.deleted) {
            version.deleted = true;
            deleted.push(version.version);
        }
        self.revision += 1;
        Ok(deleted)
    }

    /// Problems registering `schema` under `subject` would meet (empty = compatible). With a
    /// version, checks against that version only; without, against what registration checks.
    pub fn compatibility_problems(
        &self,
        subject: &str,
        schema: &ParsedSchema,
        selector: Option<VersionSelector>,
    ) -> Result<Vec<String>, StoreError> {
        let level = self.effective_compatibility(subject);
        let against = match selector {
            Some(selector) => {
                let entry = self.live_subject(subject)?;
                let found = Self::select(subject, entry, selector)?;
                vec![(found.version, &self.stored(found.id).schema)]
            }
            None => self
                .subjects
                .get(subject)
                .map_or_else(Vec::new, |s| self.versions_to_check(s, level)),
        };
        Ok(compatibility::incompatibilities(
            level,
            &schema.schema,
            &against,
        ))
    }

    pub fn global_compatibility(&self) -> CompatibilityLevel {
        self.compatibility.unwrap_or(CompatibilityLevel::DEFAULT)
    }

    pub fn set_global_compatibility(&mut self, level: CompatibilityLevel) {
        self.compatibility = Some(level);
        self.revision += 1;
    }

    /// The subject's own level, if one was set (works for subjects without versions too).
    pub fn subject_compatibility(&self, subject: &str) -> Option<CompatibilityLevel> {
        self.subjects.get(subject).and_then(|s| s.compatibility)
    }

    /// The level that applies to `subject`: its own, else the global one.
    pub fn effective_compatibility(&self, subject: &str) -> CompatibilityLevel {
        self.subject_compatibility(subject)
            .unwrap_or_else(|| self.global_compatibility())
    }

    pub fn set_subject_compatibility(&mut self, subject: &str, level: CompatibilityLevel) {
        self.subjects
            .entry(subject.to_owned())
            .or_default()
            .compatibility = Some(level);
        self.revision += 1;
    }

    /// Removes the subject's own level (the global one applies again) and returns it.
    pub fn clear_subject_compatibility(
        &mut self,
        subject: &str,
    ) -> Result<CompatibilityLevel, StoreError> {
        let level = self
            .subjects
            .get_mut(subject)
            .and_then(|s| s.compatibility.take())
            .ok_or_else(|| StoreError::SubjectCompatibilityNotFound(subject.to_owned()))?;
        self.revision += 1;
        Ok(level)
    }

    fn insert_schema(&mut self, schema: ParsedSchema) -> u32 {
        let id = self.schemas.keys().next_back().map_or(1, |last| last + 1);
        self.ids_by_normalized.insert(schema.normalized.clone(), id);
        self.schemas.insert(
            id,
            Arc::new(StoredSchema {
                id,
                text: schema.text,
                normalized: schema.normalized,
                schema: schema.schema,
            }),
        );
        id
    }

    fn stored(&self, id: u32) -> &StoredSchema {
        self.schemas
            .get(&id)
            .expect("every subject version refers to a stored schema")
    }

    fn live_subject(&self, subject: &str) -> Result<&Subject, StoreError> {
        self.subjects
            .get(subject)
            .filter(|s| s.live_versions().next().is_some())
            .ok_or_else(|| StoreError::SubjectNotFound(subject.to_owned()))
    }

    fn live_version_with<'s>(
        &self,
        subject: &'s Subject,
        normalized: &str,
    ) -> Option<&'s SubjectVersion> {
        subject
            .live_versions()
            .find(|v| self.stored(v.id).normalized == normalized)
    }

    fn select<'s>(
        subject_name: &str,
        subject: &'s Subject,
        selector: VersionSelector,
    ) -> Result<&'s SubjectVersion, StoreError> {
        let found = match selector {
            VersionSelector::Latest => subject.live_versions().next_back(),
            VersionSelector::Number(n) => subject.live_versions().find(|v| v.version == n),
        };
        found.ok_or_else(|| StoreError::VersionNotFound {
            subject: subject_name.to_owned(),
            version: match selector {
                VersionSelector::Latest => 0,
                VersionSelector::Number(n) => n,
            },
        })
    }

    /// The live versions a new schema must be compatible with, newest first: only the latest, or
    /// all of them for the transitive levels.
    fn versions_to_check(
        &self,
        subject: &Subject,
        level: CompatibilityLevel,
    ) -> Vec<(u32, &Schema)> {
        let newest_first = subject
            .live_versions()
            .rev()
            .map(|v| (v.version, &self.stored(v.id).schema));
        if level.is_transitive() {
            newest_first.collect()
        } else {
            newest_first.take(1).collect()
        }
    }

    fn subject_schema(&self, subject: &str, version: &SubjectVersion) -> SubjectSchema {
        SubjectSchema {
            subject: subject.to_owned(),
            version: version.version,
            id: version.id,
            schema: self.stored(version.id).text.clone(),
        }
    }
}

/// What the data file holds: enough to rebuild the registry with the same ids and versions.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    format: String,
    compatibility: Option<CompatibilityLevel>,
    schemas: Vec<SnapshotSchema>,
    subjects: BTreeMap<String, Subject>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotSchema {
    id: u32,
    schema: String,
}

const SNAPSHOT_FORMAT: &str = "dev-schema-registry/1";

impl Registry {
    pub fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            format: SNAPSHOT_FORMAT.to_owned(),
            compatibility: self.compatibility,
            schemas: self
                .schemas
                .values()
                .map(|s| SnapshotSchema {
                    id: s.id,
                    schema: s.text.clone(),
                })
                .collect(),
            subjects: self.subjects.clone(),
        }
    }

    /// Rebuilds a registry from a snapshot, checking that it is consistent; the error says what
    /// is wrong.
    pub fn from_snapshot(snapshot: Snapshot) -> Result<Self, String> {
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(format!(
                "unknown format {:?} (expected {SNAPSHOT_FORMAT:?})",
                snapshot.format
            ));
        }
        let mut registry = Registry {
            compatibility: snapshot.compatibility,
            ..Registry::default()
        };
        for stored in snapshot.schemas {
            let parsed = ParsedSchema::parse(&stored.schema, None)
                .map_err(|e| format!("schema id {}: {e}", stored.id))?;
            if stored.id == 0 || registry.schemas.contains_key(&stored.id) {
                return Err(format!("schema id {} is zero or repeated", stored.id));
            }
            if let Some(other) = registry
                .ids_by_normalized
                .insert(parsed.normalized.clone(), stored.id)
            {
                return Err(format!(
                    "schema ids {other} and {} hold the same schema",
                    stored.id
                ));
            }
            registry.schemas.insert(
                stored.id,
                Arc::new(StoredSchema {
                    id: stored.id,
                    text: parsed.text,
                    normalized: parsed.normalized,
                    schema: parsed.schema,
                }),
            );
        }
        for (name, subject) in &snapshot.subjects {
            let mut previous = 0;
            for v in &subject.versions {
                if v.version <= previous {
                    return Err(format!(
                        "subject {name:?}: versions are not strictly increasing"
                    ));
                }
                previous = v.version;
                if !registry.schemas.contains_key(&v.id) {
                    return Err(format!(
                        "subject {name:?} version {} refers to unknown schema id {}",
                        v.version, v.id
                    ));
                }
            }
        }
        registry.subjects = snapshot.subjects;
        Ok(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ParsedSchema {
        ParsedSchema::parse(text, None).unwrap()
    }

    const V1: &str =
        r#"{"type":"record","name":"P","namespace":"n","fields":[{"name":"id","type":"int"}]}"#;
    const V2: &str = r#"{"type":"record","name":"P","namespace":"n","fields":[{"name":"id","type":"int"},{"name":"x","type":["null","string"],"default":null}]}"#;

    #[test]
    fn identity_ignores_formatting_and_namespace_spelling_but_not_defaults() {
        let a = parse(V1);
        let b = parse(
            r#"{ "name" : "n.P", "type" : "record",
                 "fields" : [ { "type" : "int", "name" : "id" } ] }"#,
        );
        assert_eq!(a.normalized, b.normalized);
        let with_default = parse(
            r#"{"type":"record","name":"P","namespace":"n","fields":[{"name":"id","type":"int","default":0}]}"#,
        );
        assert_ne!(a.normalized, with_default.normalized);
    }

    #[test]
    fn schema_type_other_than_avro_is_rejected() {
        assert!(ParsedSchema::parse(V1, Some("AVRO")).is_ok());
        let err = ParsedSchema::parse(V1, Some("PROTOBUF")).unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidSchema(m) if m.contains("PROTOBUF")),
            "{err}"
        );
    }

    #[test]
    fn version_selector_follows_confluent_rules() {
        assert_eq!(
            VersionSelector::parse("latest"),
            Some(VersionSelector::Latest)
        );
        assert_eq!(VersionSelector::parse("-1"), Some(VersionSelector::Latest));
        assert_eq!(
            VersionSelector::parse("7"),
            Some(VersionSelector::Number(7))
        );
        assert_eq!(
            VersionSelector::parse("2147483647"),
            Some(VersionSelector::Number(i32::MAX as u32))
        );
        for bad in ["0", "-2", "2147483648", "abc", "", "1.5"] {
            assert_eq!(VersionSelector::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn soft_deleted_subject_keeps_ids_and_never_reuses_versions() {
        let mut registry = Registry::default();
        let first = registry.register("s", parse(V1)).unwrap();
        assert_eq!((first.id, first.version, first.new_version), (1, 1, true));
        assert_eq!(registry.delete_subject("s").unwrap(), vec![1]);
        assert_eq!(registry.subjects(), Vec::<String>::new());
        assert_eq!(
            registry.versions("s"),
            Err(StoreError::SubjectNotFound("s".into()))
        );
        assert_eq!(registry.schema_by_id(1).unwrap().text, V1);
        let again = registry.register("s", parse(V1)).unwrap();
        assert_eq!((again.id, again.version, again.new_version), (1, 2, true));
        assert_eq!(registry.versions("s").unwrap(), vec![2]);
    }

    #[test]
    fn unchanged_registration_does_not_bump_the_revision() {
        let mut registry = Registry::default();
        registry.register("s", parse(V1)).unwrap();
        let revision = registry.revision();
        let again = registry.register("s", parse(V1)).unwrap();
        assert!(!again.new_version);
        assert_eq!(registry.revision(), revision);
        registry.register("s", parse(V2)).unwrap();
        assert_eq!(registry.revision(), revision + 1);
    }

    #[test]
    fn snapshot_round_trip_keeps_ids_versions_and_config() {
        let mut registry = Registry::default();
        registry.register("a", parse(V1)).unwrap();
        registry.register("a", parse(V2)).unwrap();
        registry.register("b", parse(V2)).unwrap();
        registry.set_subject_compatibility("b", CompatibilityLevel::None);
        registry.set_global_compatibility(CompatibilityLevel::Full);
        registry.delete_subject("b").unwrap();

        let json = serde_json::to_string(&registry.to_snapshot()).unwrap();
        let restored = Registry::from_snapshot(serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(restored.subjects(), vec!["a".to_owned()]);
        assert_eq!(restored.versions("a").unwrap(), vec![1, 2]);
        assert_eq!(
            restored.version("a", VersionSelector::Latest).unwrap().id,
            2
        );
        assert_eq!(
            restored.subject_compatibility("b"),
            Some(CompatibilityLevel::None)
        );
        assert_eq!(restored.global_compatibility(), CompatibilityLevel::Full);
        let mut restored = restored;
        let third = restored
            .register(
                "c",
                parse(r#"{"type":"record","name":"Q","fields":[{"name":"a","type":"long"}]}"#),
            )
            .unwrap();
        assert_eq!(third.id, 3);
    }

    #[test]
    fn inconsistent_snapshot_is_refused() {
        let dangling = r#"{"format":"dev-schema-registry/1","compatibility":null,"schemas":[],
            "subjects":{"s":{"compatibility":null,"versions":[{"version":1,"id":9,"deleted":false}]}}}"#;
        let err = Registry::from_snapshot(serde_json::from_str(dangling).unwrap()).unwrap_err();
        assert!(err.contains("unknown schema id 9"), "{err}");

        let duplicate = format!(
            r#"{{"format":"dev-schema-registry/1","compatibility":null,"subjects":{{}},
            "schemas":[{{"id":1,"schema":{v1:?}}},{{"id":2,"schema":{v1:?}}}]}}"#,
            v1 = V1
        );
        let err = Registry::from_snapshot(serde_json::from_str(&duplicate).unwrap()).unwrap_err();
        assert!(err.contains("same schema"), "{err}");
    }
}
