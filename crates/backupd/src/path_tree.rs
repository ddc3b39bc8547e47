//! Paths kept as a tree of names: each node holds its parent and its own name, and a path is
//! a [`NodeId`]. A set of paths N levels deep then takes memory linear in its names, where
//! a full path per folder takes the sum of the paths' lengths, quadratic in the depth. A
//! path's components are rebuilt when needed, for one path at a time.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

/// A path in a [`PathTree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(usize);

/// Paths as a tree: every path added is a node, with its parent folders as its ancestors.
#[derive(Debug)]
pub struct PathTree {
    /// `nodes[0]` is the root (the empty path).
    nodes: Vec<Node>,
    children: HashMap<ChildKey, NodeId>,
}

#[derive(Debug)]
struct Node {
    parent: NodeId,
    /// Shared with its key in `children`, so each name is held once.
    name: Arc<OsStr>,
}

/// A node's place under its parent: the key of `children`.
#[derive(Debug)]
struct ChildKey {
    parent: NodeId,
    name: Arc<OsStr>,
}

/// What a child is looked up by, owned ([`ChildKey`]) or borrowed (`(NodeId, &OsStr)`), so
/// that a lookup allocates nothing.
trait ChildOf {
    fn parent(&self) -> NodeId;
    fn name(&self) -> &OsStr;
}

impl ChildOf for ChildKey {
    fn parent(&self) -> NodeId {
        self.parent
    }
    fn name(&self) -> &OsStr {
        &self.name
    }
}

impl ChildOf for (NodeId, &OsStr) {
    fn parent(&self) -> NodeId {
        self.0
    }
    fn name(&self) -> &OsStr {
        self.1
    }
}

impl Hash for dyn ChildOf + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parent().hash(state);
        self.name().hash(state);
    }
}

impl PartialEq for dyn ChildOf + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parent() == other.parent() && self.name() == other.name()
    }
}

impl Eq for dyn ChildOf + '_ {}

// `ChildKey` hashes and compares as its `dyn ChildOf` view, as `Borrow` requires.
impl Hash for ChildKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn ChildOf).hash(state);
    }
}

impl PartialEq for ChildKey {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn ChildOf) == (other as &dyn ChildOf)
    }
}

impl Eq for ChildKey {}

impl<'a> Borrow<dyn ChildOf + 'a> for ChildKey {
    fn borrow(&self) -> &(dyn ChildOf + 'a) {
        self
    }
}

impl Default for PathTree {
    fn default() -> Self {
        Self::new()
    }
}

impl PathTree {
    /// The empty path, parent of every top-level name.
    pub const ROOT: NodeId = NodeId(0);

    pub fn new() -> Self {
        PathTree {
            nodes: vec![Node {
                parent: Self::ROOT,
                name: Arc::from(OsStr::new("")),
            }],
            children: HashMap::new(),
        }
    }

    /// How many paths are held, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether only the root is held.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    /// `name` in `parent`, if added.
    pub fn child(&self, parent: NodeId, name: &OsStr) -> Option<NodeId> {
        self.children.get(&(parent, name) as &dyn ChildOf).copied()
    }

    /// `name` in `parent`, added if new.
    pub fn add_child(&mut self, parent: NodeId, name: &OsStr) -> NodeId {
        if let Some(id) = self.child(parent, name) {
            return id;
        }
        let id = NodeId(self.nodes.len());
        let name: Arc<OsStr> = Arc::from(name);
        self.children.insert(
            ChildKey {
                parent,
                name: Arc::clone(&name),
            },
            id,
        );
        self.nodes.push(Node { parent, name });
        id
    }

    /// The path of `parts` below the root, if added.
    pub fn find(&self, parts: &[&OsStr]) -> Option<NodeId> {
        (parts.iter()).try_fold(Self::ROOT, |parent, name| self.child(parent, name))
    }

    /// The path of `parts` below the root, added (with its parents) if new.
    pub fn add(&mut self, parts: &[&OsStr]) -> NodeId {
        (parts.iter()).fold(Self::ROOT, |parent, name| self.add_child(parent, name))
    }

    /// [`add`](Self::add), returning the node of each prefix of `parts`: the first
    /// component's first, that of `parts` itself last.
    pub fn add_chain(&mut self, parts: &[&OsStr]) -> Vec<NodeId> {
        let mut chain = Vec::with_capacity(parts.len());
        let mut parent = Self::ROOT;
        for name in parts {
            parent = self.add_child(parent, name);
            chain.push(parent);
        }
        chain
    }

    /// The parent of `id`; `None` for the root.
    pub fn parent(&self, id: NodeId) -> Option<NodeId> {
        (id != Self::ROOT).then(|| self.node(id).parent)
    }

    /// The last component of `id` (empty for the root).
    pub fn name(&self, id: NodeId) -> &OsStr {
        &self.node(id).name
    }

    /// The components of `id`, from the root down (none for the root).
    pub fn parts(&self, id: NodeId) -> Vec<&OsStr> {
        let mut parts = Vec::new();
        let mut at = id;
        while let Some(parent) = self.parent(at) {
            parts.push(self.name(at));
            at = parent;
        }
        parts.reverse();
        parts
    }

    /// The components of `id` joined as a relative path (empty for the root).
    pub fn path(&self, id: NodeId) -> PathBuf {
        self.parts(id).into_iter().collect()
    }

    fn node(&self, id: NodeId) -> &Node {
        // Ids come only from this tree, which never removes a node.
        &self.nodes[id.0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(parts: &[&'static str]) -> Vec<&'static OsStr> {
        parts.iter().map(|part| OsStr::new(*part)).collect()
    }

    #[test]
    fn a_path_added_is_found_and_rebuilt() {
        let mut tree = PathTree::new();
        let deep = tree.add(&os(&["a", "b", "c"]));
        assert_eq!(tree.find(&os(&["a", "b", "c"])), Some(deep));
        assert_eq!(tree.parts(deep), os(&["a", "b", "c"]));
        assert_eq!(tree.path(deep), PathBuf::from("a/b/c"));
        assert_eq!(tree.name(deep), "c");
        let b = tree.find(&os(&["a", "b"])).unwrap();
        assert_eq!(tree.parent(deep), Some(b));
        assert_eq!(tree.len(), 4, "the root and one node per component");
    }

    #[test]
    fn shared_parents_are_held_once() {
        let mut tree = PathTree::new();
        let first = tree.add(&os(&["top", "docs", "a.txt"]));
        let second = tree.add(&os(&["top", "docs", "b.txt"]));
        assert_ne!(first, second);
        assert_eq!(tree.parent(first), tree.parent(second));
        assert_eq!(
            tree.add(&os(&["top", "docs", "a.txt"])),
            first,
            "added once"
        );
        assert_eq!(tree.len(), 5);
    }

    #[test]
    fn the_same_name_under_other_parents_is_another_path() {
        let mut tree = PathTree::new();
        let x = tree.add(&os(&["x", "same"]));
        let y = tree.add(&os(&["y", "same"]));
        assert_ne!(x, y);
        assert_eq!(tree.find(&os(&["same"])), None);
        assert_eq!(tree.find(&os(&["x", "same", "more"])), None);
    }

    #[test]
    fn the_root_is_the_empty_path() {
        let mut tree = PathTree::new();
        assert!(tree.is_empty());
        assert_eq!(tree.add(&[]), PathTree::ROOT);
        assert_eq!(tree.find(&[]), Some(PathTree::ROOT));
        assert_eq!(tree.parent(PathTree::ROOT), None);
        assert!(tree.parts(PathTree::ROOT).is_empty());
        assert_eq!(tree.path(PathTree::ROOT), PathBuf::new());
    }

    #[test]
    fn a_chain_names_every_prefix() {
        let mut tree = PathTree::new();
        let chain = tree.add_chain(&os(&["a", "b", "c"]));
        assert_eq!(chain.len(), 3);
        assert_eq!(Some(chain[0]), tree.find(&os(&["a"])));
        assert_eq!(Some(chain[1]), tree.find(&os(&["a", "b"])));
        assert_eq!(Some(chain[2]), tree.find(&os(&["a", "b", "c"])));
        assert!(tree.add_chain(&[]).is_empty());
    }

    #[test]
    fn memory_grows_with_the_names_not_the_paths() {
        // 1000 levels of 255-byte names: about 255 KB of names, where full paths would sum
        // to 128 MB. Each name is held once, shared by its node and its key.
        let name = "n".repeat(255);
        let parts: Vec<&OsStr> = (0..1000).map(|_| OsStr::new(name.as_str())).collect();
        let mut tree = PathTree::new();
        tree.add_chain(&parts);
        assert_eq!(tree.len(), 1001);
        let deepest = tree.find(&parts).unwrap();
        assert_eq!(tree.parts(deepest).len(), 1000);
        let held: Vec<usize> = (tree.children.keys())
            .map(|key| Arc::strong_count(&key.name))
            .collect();
        assert!(
            held.iter().all(|count| *count == 2),
            "each name shared by its node and its key"
        );
    }
}
