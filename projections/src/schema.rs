//! OpenAPI schemas of the closed vocabularies, built from the same constants
//! the parsers use, so the document lists exactly what is accepted.

use std::borrow::Cow;

use runledger_events::{EndReason, TriggeredBy, RUN_EVENT_TYPES};
use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::{SortField, StatusValue};

/// A string schema that admits exactly `values`.
pub fn string_enum<'a>(description: &str, values: impl IntoIterator<Item = &'a str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(values))
        .into()
}

macro_rules! enum_schema {
    ($(#[$meta:meta])* $marker:ident, $name:literal, $description:literal, $values:expr) => {
        $(#[$meta])*
        pub struct $marker;

        impl PartialSchema for $marker {
            fn schema() -> RefOr<Schema> {
                string_enum($description, $values)
            }
        }

        impl ToSchema for $marker {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

enum_schema!(
    /// The schema of [`EndReason`].
    EndReasonSchema,
    "EndReason",
    "Why a run ended.",
    EndReason::ALL.iter().map(|r| r.as_str())
);

enum_schema!(
    /// The schema of [`TriggeredBy`].
    TriggeredBySchema,
    "TriggeredBy",
    "What caused a run to be created.",
    TriggeredBy::ALL.iter().map(|t| t.as_str())
);

enum_schema!(
    /// The schema of a run event's `type`.
    EventTypeSchema,
    "EventType",
    "The type of a run event.",
    RUN_EVENT_TYPES.iter().copied()
);

enum_schema!(
    /// The schema of a list's `sort_field`.
    SortFieldSchema,
    "SortField",
    "What a run list is sorted by.",
    SortField::NAMES.iter().copied()
);

enum_schema!(
    /// The schema of a list's `sort_direction`.
    SortDirectionSchema,
    "SortDirection",
    "The direction of a run list's sort.",
    ["asc", "desc"]
);

/// One value of a list's `status` filter: a phase, an end reason, `deleted`
/// or `dead_letter`.
pub fn status_filter_values() -> Vec<String> {
    StatusValue::allowed().split(", ").map(str::to_owned).collect()
}

/// The schema of [`runledger_events::ExecutionTrace`]: optional
/// non-negative integers, nothing else.
pub struct ExecutionTraceSchema;

impl PartialSchema for ExecutionTraceSchema {
    fn schema() -> RefOr<Schema> {
        let mut object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Milliseconds each step of an execution took, as the executor measured them.",
            ))
            .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(false)));
        for member in runledger_events::ExecutionTrace::MEMBERS {
            object = object.property(
                *member,
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    )))
                    .minimum(Some(0)),
            );
        }
        object.into()
    }
}

impl ToSchema for ExecutionTraceSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ExecutionTrace")
    }
}
