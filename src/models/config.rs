//! Reading `config.json` and friends: a thin typed view over JSON that names the file
//! and key in every error, so a runner's config parsing stays short.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Error, Result};

/// A JSON object from a model directory, with the path it came from (for errors).
#[derive(Clone, Debug)]
pub struct JsonView<'a> {
    /// Where this object lives: file name plus the keys leading to it, e.g. `config.json:text_config`.
    pub origin: String,
    pub value: &'a Value,
}

/// Reads and parses `dir/file`.
pub fn read_json(dir: impl AsRef<Path>, file: &str) -> Result<Value> {
    let path: PathBuf = dir.as_ref().join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Format(format!("{}: {e}", path.display())))
}

impl<'a> JsonView<'a> {
    /// Views `value` (which must be an object) as coming from `origin`.
    pub fn new(origin: impl Into<String>, value: &'a Value) -> Result<Self> {
        let origin = origin.into();
        if !value.is_object() {
            return Err(Error::Format(format!("{origin}: expected a JSON object")));
        }
        Ok(JsonView { origin, value })
    }

    /// The raw value at `key`, if present and not null.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is present and not null.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The object at `key` as a view.
    pub fn sub(&self, key: &str) -> Result<JsonView<'a>> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        JsonView::new(format!("{}:{key}", self.origin), v)
    }

    /// The object at `key` as a view, if present.
    pub fn sub_opt(&self, key: &str) -> Result<Option<JsonView<'a>>> {
        self.get(key)
            .map(|v| JsonView::new(format!("{}:{key}", self.origin), v))
            .transpose()
    }

    fn missing(&self, key: &str) -> Error {
        Error::Format(format!("{}: missing key \"{key}\"", self.origin))
    }

    fn wrong(&self, key: &str, want: &str) -> Error {
        Error::Format(format!(
            "{}: \"{key}\" should be {want}, found {}",
            self.origin,
            self.value.get(key).map(|v| v.to_string()).unwrap_or_default()
        ))
    }

    /// A non-negative integer at `key`.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_u64()
            .and_then(|u| usize::try_from(u).ok())
            .ok_or_else(|| self.wrong(key, "a non-negative integer"))
    }

    /// A non-negative integer at `key`, or `default` when absent.
    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        if self.has(key) {
            self.usize(key)
        } else {
            Ok(default)
        }
    }

    /// A number at `key`.
    pub fn f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_f64().ok_or_else(|| self.wrong(key, "a number"))
    }

    /// A number at `key`, or `default` when absent.
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        if self.has(key) {
            self.f64(key)
        } else {
            Ok(default)
        }
    }

    /// A boolean at `key`, or `default` when absent.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.wrong(key, "true or false")),
        }
    }

    /// A string at `key`.
    pub fn str(&self, key: &str) -> Result<&'a str> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_str().ok_or_else(|| self.wrong(key, "a string"))
    }

    /// A string at `key`, if present.
    pub fn str_opt(&self, key: &str) -> Result<Option<&'a str>> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| self.wrong(key, "a string")))
            .transpose()
    }

    /// An array of non-negative integers at `key`.
    pub fn usize_list(&self, key: &str) -> Result<Vec<usize>> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        let arr = v.as_array().ok_or_else(|| self.wrong(key, "an array of integers"))?;
        arr.iter()
            .map(|x| x.as_u64().and_then(|u| usize::try_from(u).ok()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.wrong(key, "an array of non-negative integers"))
    }

    /// An array of numbers at `key`.
    pub fn f64_list(&self, key: &str) -> Result<Vec<f64>> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        let arr = v.as_array().ok_or_else(|| self.wrong(key, "an array of numbers"))?;
        arr.iter()
            .map(|x| x.as_f64())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.wrong(key, "an array of numbers"))
    }
}
