//! The bucket property registry: defaults from the node's config, per-bucket overrides from config
//! or from a client's set-bucket-props, persisted in the engine's metadata so a restart keeps them.

use std::collections::BTreeMap;
use std::sync::Arc;

use dynamo_storage::Engine;
use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::props::BucketProps;

/// Metadata name under which overrides are persisted.
const META_KEY: &str = "bucket_props.v1";

/// Bucket properties by bucket name.
pub struct Buckets {
    defaults: BucketProps,
    overrides: RwLock<BTreeMap<Vec<u8>, BucketProps>>,
    engine: Arc<dyn Engine>,
}

impl Buckets {
    /// Loads persisted overrides from `engine`, then applies `configured` ones on top (config wins
    /// over what a client set earlier, so an operator can always restore a bucket). Every set of
    /// properties is validated; an invalid one is an error naming the bucket.
    pub fn load(
        defaults: BucketProps,
        configured: BTreeMap<Vec<u8>, BucketProps>,
        engine: Arc<dyn Engine>,
    ) -> Result<Buckets> {
        defaults.validate()?;
        let mut overrides: BTreeMap<Vec<u8>, BucketProps> = match engine.get_meta(META_KEY)? {
            Some(bytes) => serde_json::from_slice::<Vec<(Vec<u8>, BucketProps)>>(&bytes)
                .map_err(|e| {
                    Error::Storage(format!("stored bucket properties are unreadable: {e}"))
                })?
                .into_iter()
                .collect(),
            None => BTreeMap::new(),
        };
        for (bucket, props) in configured {
            props.validate().map_err(|e| {
                Error::InvalidRequest(format!(
                    "bucket {:?}: {e}",
                    String::from_utf8_lossy(&bucket)
                ))
            })?;
            overrides.insert(bucket, props);
        }
        Ok(Buckets {
            defaults,
            overrides: RwLock::new(overrides),
            engine,
        })
    }

    /// The properties in force for `bucket`.
    pub fn get(&self, bucket: &[u8]) -> BucketProps {
        self.overrides
            .read()
            .get(bucket)
            .cloned()
            .unwrap_or_else(|| self.defaults.clone())
    }

    /// Every n_val in force: the default's and each configured bucket's.
    pub(crate) fn n_vals(&self) -> std::collections::BTreeSet<u8> {
        std::iter::once(self.defaults.n_val)
            .chain(self.overrides.read().values().map(|p| p.n_val))
            .collect()
    }

    /// Validates and stores new properties for `bucket` (durably, before returning). An invalid
    /// set changes nothing.
    pub fn set(&self, bucket: &[u8], props: BucketProps) -> Result<()> {
        props.validate()?;
        let mut overrides = self.overrides.write();
        let mut next = overrides.clone();
        next.insert(bucket.to_vec(), props);
        let list: Vec<(&Vec<u8>, &BucketProps)> = next.iter().collect();
        let bytes = serde_json::to_vec(&list).map_err(|e| Error::Internal(e.to_string()))?;
        self.engine.set_meta(META_KEY, &bytes)?;
        *overrides = next;
        Ok(())
    }
}
