//! Which models the stand-in has "loaded", as Ollama's scheduler would: a model is loaded by
//! the first call that needs it (a cold start: `--load-ms` of loading, when set), stays loaded,
//! and is unloaded by a `keep_alive: 0` request. `/api/ps` lists what is loaded.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Residency {
    loaded: Mutex<BTreeMap<String, ()>>,
}

/// A loaded model as `/api/ps` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub name: String,
    pub size: u64,
    pub size_vram: u64,
}

impl Residency {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ()>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A call needs `model`: whether it had to be loaded first.
    pub fn touch(&self, model: &str) -> bool {
        self.lock().insert(model.to_owned(), ()).is_none()
    }

    pub fn unload(&self, model: &str) {
        self.lock().remove(model);
    }

    /// What is loaded, by name. Sizes are made up from the name, stable: a name containing
    /// `cpu` runs on the CPU, `split` half and half, anything else on the GPU.
    pub fn list(&self) -> Vec<Loaded> {
        self.lock()
            .keys()
            .map(|name| {
                let h = name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
                let size = (1 << 30) + (h % 4) * (1 << 30) + (h % 1000) * 4096;
                let size_vram = if name.contains("cpu") {
                    0
                } else if name.contains("split") {
                    size / 2
                } else {
                    size
                };
                Loaded { name: name.clone(), size, size_vram }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_by_the_first_call_until_unloaded() {
        let r = Residency::default();
        assert!(r.touch("a"));
        assert!(!r.touch("a"), "already loaded");
        assert!(r.touch("b-cpu"));
        let l = r.list();
        assert_eq!(l.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["a", "b-cpu"]);
        assert_eq!(l[0].size_vram, l[0].size);
        assert_eq!(l[1].size_vram, 0);
        r.unload("a");
        assert!(r.touch("a"), "loaded again");
    }
}
