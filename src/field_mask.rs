//! Update masks, read once for every Update RPC (AIP-134, AIP-161).
//!
//! A mask arrives as `google.protobuf.FieldMask` paths, over gRPC as sent and
//! over REST as the gateway split the JSON string (`?updateMask=a,b`, or the
//! body's `updateMask`) without reading it. [`UpdateMask::parse`] turns those
//! strings into the resource's proto field paths, so every service accepts
//! the same spellings:
//! - proto field paths (`display_name`, `scale_up.rules`: the AIP-161 form);
//! - their JSON names (`displayName`, `scaleUp.rules`), resolved through the
//!   resource's descriptor, not by guessing at case;
//! - `*`, alone: every mutable field is replaced, and a field absent from
//!   the request is reset to its default (AIP-134 full replacement).
//!
//! Anything else (an unknown field, an output-only or immutable one, an empty
//! segment, `*` beside other paths) is `INVALID_ARGUMENT` naming
//! `update_mask`. An absent or empty mask is `None`: the service then updates
//! the fields the request populates, as AIP-134 describes.

use prost_reflect::{Kind, MessageDescriptor};

use crate::error::ApiError;

/// The field every mask error names.
const FIELD: &str = "update_mask";

/// What an Update RPC may change: the resource's message and its mutable
/// paths, top-level fields and (where a service supports it) nested ones.
#[derive(Debug, Clone, Copy)]
pub struct Mutable {
    /// The resource's full message name, e.g. `tenantry.v1.Tenant`.
    pub message: &'static str,
    /// Proto paths the service can update; `*` expands to those without a dot.
    pub paths: &'static [&'static str],
}

/// A valid, non-empty mask in proto field paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateMask {
    /// Canonical proto paths, in the order given, without duplicates.
    pub paths: Vec<String>,
    /// The caller sent `*`: fields absent from the request are reset.
    pub replace_all: bool,
}

impl UpdateMask {
    /// Reads a mask's paths against `mutable`; `None` when there is no mask.
    pub fn parse(mask: Option<&prost_types::FieldMask>, mutable: Mutable) -> Result<Option<UpdateMask>, ApiError> {
        let Some(mask) = mask.filter(|m| !m.paths.is_empty()) else { return Ok(None) };
        if mask.paths.iter().any(|p| p.trim() == "*") {
            if mask.paths.len() > 1 {
                return Err(ApiError::invalid(FIELD, "`*` replaces every mutable field and must be the only path"));
            }
            let paths = mutable.paths.iter().filter(|p| !p.contains('.')).map(|p| (*p).to_owned()).collect();
            return Ok(Some(UpdateMask { paths, replace_all: true }));
        }
        let resource = crate::proto::descriptors()
            .get_message_by_name(mutable.message)
            .ok_or_else(|| ApiError::internal(format!("no descriptor for {}", mutable.message)))?;
        let mut paths: Vec<String> = Vec::with_capacity(mask.paths.len());
        for given in &mask.paths {
            let path = proto_path(&resource, given.trim())?;
            if !mutable.paths.contains(&path.as_str()) {
                return Err(ApiError::invalid(
                    FIELD,
                    format!("`{path}` cannot be updated; mutable fields: {}", mutable.paths.join(", ")),
                ));
            }
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
        Ok(Some(UpdateMask { paths, replace_all: false }))
    }

    /// With no mask: the top-level mutable fields `resource` populates
    /// (non-default scalars, non-empty lists and maps), as AIP-134 says.
    pub fn populated(resource: &impl prost::Message, mutable: Mutable) -> Result<Vec<String>, ApiError> {
        let descriptor = crate::proto::descriptors()
            .get_message_by_name(mutable.message)
            .ok_or_else(|| ApiError::internal(format!("no descriptor for {}", mutable.message)))?;
        let message = prost_reflect::DynamicMessage::decode(descriptor, resource.encode_to_vec().as_slice())
            .map_err(|error| ApiError::internal(format!("{} does not round-trip: {error}", mutable.message)))?;
        Ok(mutable
            .paths
            .iter()
            .filter(|path| !path.contains('.') && message.has_field_by_name(path))
            .map(|path| (*path).to_owned())
            .collect())
    }

    /// Whether the mask names `path`.
    pub fn names(&self, path: &str) -> bool {
        self.paths.iter().any(|p| p == path)
    }
}

/// The proto path of one mask path, in either spelling.
fn proto_path(resource: &MessageDescriptor, given: &str) -> Result<String, ApiError> {
    let shown: String = given.chars().take(64).collect();
    if given.is_empty() {
        return Err(ApiError::invalid(FIELD, "contains an empty path"));
    }
    let mut message = Some(resource.clone());
    let mut names = Vec::new();
    for segment in given.split('.') {
        let Some(current) = message.take() else {
            return Err(ApiError::invalid(FIELD, format!("`{shown}` goes inside a field that has no fields")));
        };
        if segment.is_empty() {
            return Err(ApiError::invalid(FIELD, format!("`{shown}` has an empty segment")));
        }
        let field = current
            .get_field_by_name(segment)
            .or_else(|| current.get_field_by_json_name(segment))
            .ok_or_else(|| ApiError::invalid(FIELD, format!("`{shown}` is not a field of {}", resource.name())))?;
        if let Kind::Message(inner) = field.kind()
            && !field.is_list()
            && !field.is_map()
            && inner.package_name() != "google.protobuf"
        {
            message = Some(inner);
        }
        names.push(field.name().to_owned());
    }
    Ok(names.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: Mutable = Mutable { message: "tenantry.v1.Tenant", paths: &["display_name", "labels", "plan_id"] };
    const POLICY: Mutable =
        Mutable { message: "tenantry.v1.ScalingPolicy", paths: &["min_replicas", "scale_up", "scale_up.rules"] };

    fn parse(paths: &[&str], mutable: Mutable) -> Result<Option<UpdateMask>, ApiError> {
        let mask = prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() };
        UpdateMask::parse(Some(&mask), mutable)
    }

    fn paths(given: &[&str], mutable: Mutable) -> Vec<String> {
        parse(given, mutable).unwrap().unwrap().paths
    }

    #[test]
    fn proto_paths_and_json_names_read_the_same() {
        assert_eq!(paths(&["display_name", "labels"], TENANT), ["display_name", "labels"]);
        assert_eq!(paths(&["displayName", "planId", "display_name"], TENANT), ["display_name", "plan_id"]);
        assert_eq!(paths(&["scaleUp.rules", "min_replicas"], POLICY), ["scale_up.rules", "min_replicas"]);
    }

    #[test]
    fn a_star_replaces_every_top_level_mutable_field() {
        let mask = parse(&["*"], POLICY).unwrap().unwrap();
        assert!(mask.replace_all);
        assert_eq!(mask.paths, ["min_replicas", "scale_up"]);
    }

    #[test]
    fn without_a_mask_the_populated_mutable_fields_are_updated() {
        let tenant = crate::proto::tenantry::v1::Tenant {
            id: "ten_x".into(),
            display_name: "Acme".into(),
            labels: [("region".to_owned(), "eu".to_owned())].into(),
            ..Default::default()
        };
        assert_eq!(UpdateMask::populated(&tenant, TENANT).unwrap(), ["display_name", "labels"]);
        let empty = crate::proto::tenantry::v1::Tenant { id: "ten_x".into(), ..Default::default() };
        assert!(UpdateMask::populated(&empty, TENANT).unwrap().is_empty());
    }

    #[test]
    fn no_mask_is_none() {
        assert_eq!(UpdateMask::parse(None, TENANT).unwrap(), None);
        assert_eq!(parse(&[], TENANT).unwrap(), None);
    }

    #[test]
    fn bad_masks_name_update_mask() {
        for bad in [&["nope"][..], &["id"], &["create_time"], &["slug"], &[""], &["display_name."], &["*", "labels"]] {
            match parse(bad, TENANT) {
                Err(ApiError::InvalidArgument { field, .. }) => assert_eq!(field, "update_mask", "{bad:?}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(parse(&["scale_up.value"], POLICY).is_err());
        assert!(parse(&["min_replicas.x"], POLICY).is_err());
    }
}
