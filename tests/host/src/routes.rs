//! HTTP routing as Spin 3.6 does it (`crates/routes`): the same `routefinder` crate, the same
//! route parsing (`/...` trailing wildcards, `:name` segments), exact routes beating
//! wildcards, the longest wildcard prefix winning, and a duplicated route going to the
//! component declared last.

use std::collections::HashMap;

use anyhow::{anyhow, Result};

#[derive(Debug, Clone)]
struct Handler {
    component: String,
    /// The route as written in the manifest.
    raw_route: String,
    /// The route joined to the base path (always `/` here).
    based_route: String,
}

pub struct Router {
    inner: routefinder::Router<Handler>,
}

/// What a path matched, with the values Spin passes to the component as headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub component: String,
    pub raw_route: String,
    pub based_route: String,
    /// The part of the path matched by a trailing `/...` (Spin's `spin-path-info`).
    pub trailing_wildcard: String,
    pub named_wildcards: HashMap<String, String>,
}

impl RouteMatch {
    /// The raw route without its trailing `/...` (Spin's `spin-component-route`).
    pub fn raw_route_or_prefix(&self) -> &str {
        self.raw_route.strip_suffix("/...").unwrap_or(&self.raw_route)
    }

    /// What Spin reports for a service-chaining request: a match of the whole path
    /// against a synthetic `/...` route of the target component.
    pub fn synthetic(component: &str, path: &str) -> Self {
        Self {
            component: component.to_owned(),
            raw_route: "/...".into(),
            based_route: "/...".into(),
            trailing_wildcard: path.to_owned(),
            named_wildcards: HashMap::new(),
        }
    }
}

impl Router {
    /// Builds the router from `(component, route)` pairs in manifest order; `None` routes
    /// are private (service chaining only).
    pub fn build<'a>(routes: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Result<Self> {
        // Later duplicates replace earlier ones but keep the first one's position.
        let mut entries: Vec<Handler> = Vec::new();
        for (component, route) in routes {
            let Some(raw_route) = route else { continue };
            let handler = Handler {
                component: component.to_owned(),
                raw_route: raw_route.to_owned(),
                based_route: with_base("/", raw_route),
            };
            match entries.iter_mut().find(|h| h.raw_route == raw_route) {
                Some(existing) => *existing = handler,
                None => entries.push(handler),
            }
        }
        let mut inner = routefinder::Router::new();
        for handler in entries {
            let spec = if let Some(prefix) = handler.based_route.strip_suffix("/...") {
                format!("{prefix}/*")
            } else {
                handler.based_route.clone()
            };
            let spec: routefinder::RouteSpec = spec.as_str().try_into().map_err(|e| {
                anyhow!(
                    "error parsing route {} of component {}: {e}",
                    handler.based_route,
                    handler.component
                )
            })?;
            inner.add(spec, handler).map_err(|e| anyhow!("{e}"))?;
        }
        Ok(Self { inner })
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let best = self.inner.best_match(path)?;
        let handler = best.handler();
        let captures = best.captures();
        // Spin keeps trailing slashes in the wildcard part; routefinder drops them.
        let trailing_wildcard = captures
            .wildcard()
            .map(|w| match (w.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".to_owned(),
                (false, false) => format!("/{w}"),
                (false, true) => format!("/{w}/"),
            })
            .unwrap_or_default();
        let named_wildcards = captures.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        Some(RouteMatch {
            component: handler.component.clone(),
            raw_route: handler.raw_route.clone(),
            based_route: handler.based_route.clone(),
            trailing_wildcard,
            named_wildcards,
        })
    }
}

/// Spin joins the base and the route, each with one trailing slash removed.
fn with_base(base: &str, route: &str) -> String {
    let route = if route.starts_with('/') { route.to_owned() } else { format!("/{route}") };
    let strip = |s: &str| s.strip_suffix('/').unwrap_or(s).to_owned();
    format!("{}{}", strip(base), strip(&route))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        Router::build(routes.iter().map(|(c, r)| (*c, Some(*r)))).unwrap()
    }

    fn component(r: &Router, path: &str) -> Option<String> {
        r.route(path).map(|m| m.component)
    }

    #[test]
    fn exact_beats_wildcard() {
        let r = router(&[("wild", "/..."), ("exact", "/one")]);
        assert_eq!(component(&r, "/one").as_deref(), Some("exact"));
        assert_eq!(component(&r, "/two").as_deref(), Some("wild"));
    }

    #[test]
    fn longest_wildcard_prefix_wins_regardless_of_order() {
        for order in [["/one/...", "/one/two/..."], ["/one/two/...", "/one/..."]] {
            let r = router(&[("a", order[0]), ("b", order[1])]);
            let m = r.route("/one/two/three").unwrap();
            assert_eq!(m.raw_route, "/one/two/...");
            assert_eq!(m.trailing_wildcard, "/three");
        }
    }

    #[test]
    fn trailing_slashes_in_wildcards_are_kept() {
        let r = router(&[("c", "/test/...")]);
        assert_eq!(r.route("/test").unwrap().trailing_wildcard, "");
        assert_eq!(r.route("/test/").unwrap().trailing_wildcard, "/");
        assert_eq!(r.route("/test/hello").unwrap().trailing_wildcard, "/hello");
        assert_eq!(r.route("/test/hello/").unwrap().trailing_wildcard, "/hello/");
        assert_eq!(r.route("/test/hello").unwrap().raw_route_or_prefix(), "/test");
    }

    #[test]
    fn exact_routes_do_not_match_longer_paths() {
        let r = router(&[("c", "/health/cache")]);
        assert!(r.route("/health/cache/x").is_none());
        assert!(r.route("/health").is_none());
        assert_eq!(component(&r, "/health/cache").as_deref(), Some("c"));
    }

    #[test]
    fn named_wildcards_are_captured() {
        let r = router(&[("c", "/users/:id/...")]);
        let m = r.route("/users/42/posts").unwrap();
        assert_eq!(m.named_wildcards["id"], "42");
        assert_eq!(m.trailing_wildcard, "/posts");
    }

    #[test]
    fn duplicate_route_goes_to_the_last_component() {
        let r = router(&[("first", "/foo"), ("second", "/foo")]);
        assert_eq!(component(&r, "/foo").as_deref(), Some("second"));
    }

    #[test]
    fn private_routes_are_unroutable() {
        let r = Router::build([("private", None), ("public", Some("/p"))]).unwrap();
        assert!(r.route("/private").is_none());
        assert_eq!(component(&r, "/p").as_deref(), Some("public"));
    }
}
