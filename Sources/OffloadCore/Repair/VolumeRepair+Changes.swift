extension VolumeRepair {
    /// A change repair made to one file, named by path once the tree is repaired.
    struct FileChange {
        enum What {
            /// A name removed from `directory`: the inode it named is lost.
            case removed(directory: UInt64, name: [UInt8], child: UInt64)
            /// A name brought back from its directory entry (its name item was lost).
            case restoredName
            /// A directory entry (readdir) brought back from its name.
            case restoredEntry
            /// Moved to /lost+found: no name was left.
            case moved
            /// The link count corrected.
            case links(was: UInt32, now: UInt32)
            /// A symlink whose target was damaged, now pointing at what was left of it.
            case symlinkTarget(String)
            /// An extent that does not hold (outside the space, overlapping, past the size).
            case lostData(offset: UInt64)
            /// Bytes `offset..<end` of the file were past the end of an image file cut short.
            case cutOff(offset: UInt64, end: UInt64)
            /// An extended attribute item that did not decode, rewritten: `kept`, the names
            /// of the attributes that stay; `lost`, whether any it held went.
            case lostXattrs(kept: [[UInt8]], lost: Bool)
            /// Extended attributes of an item that decodes whose values' chunk items are
            /// missing or of another length, removed: their names.
            case lostXattrValues(names: [[UInt8]])
            /// Journaled changes of the file, after commit `after`, were left out of the
            /// replay (a frame at or before theirs does not replay); `madeAs`, the name a
            /// left-out change gave it, for a file no kept change made.
            case leftOut(madeAs: (directory: UInt64, name: [UInt8])?, after: UInt64)
        }

        var inode: UInt64
        var what: What
    }

    /// Everything the passes changed, and the commit they make.
    struct Changes {
        var files: [FileChange] = []
        var repairs: [String] = []
        /// Key ranges of damaged leaves (their boundary inodes lost some items).
        var lostRanges: [(lower: TreeKey, upper: TreeKey?)] = []
        var inodeChanges = FileSystemTree.InodeChanges()
        var filesystemCommit: CopyOnWriteTree.Commit?

        mutating func absorb(_ pass: PassChanges) {
            files += pass.files
            repairs += pass.repairs
        }

        /// One line per changed file, by path in the repaired tree, sorted by path.
        func describe(in tree: FileSystemTree) -> [String] {
            var lines: [(path: String, line: String)] = []
            var described = Set<String>()
            func add(_ path: String, _ line: String) {
                if described.insert(line).inserted { lines.append((path, line)) }
            }
            for change in files {
                let path = Self.path(of: change.inode, in: tree) ?? "#\(change.inode)"
                switch change.what {
                case .removed(let directory, let name, let child):
                    let parent = Self.path(of: directory, in: tree) ?? "#\(directory)"
                    let removed = (parent == "/" ? "" : parent) + "/" + String(decoding: name, as: UTF8.self)
                    add(removed, "removed: \(removed) (it named inode \(child), which was lost)")
                case .restoredName:
                    add(path, "restored: \(path) (its name was lost and is taken from its directory entry)")
                case .restoredEntry:
                    add(path, "restored: \(path) (its directory entry was lost: it did not show in listings)")
                case .moved:
                    add(path, "moved: \(path) (it lost its name)")
                case .links(let was, let now):
                    add(path, "links: \(path) (its link count was \(was), now \(now))")
                case .symlinkTarget(let target):
                    add(path, "lost data: \(path) (its symlink target was damaged, or in a damaged tree block: it now points to '\(target)')")
                case .lostData(let offset):
                    add(path, "lost data: \(path) (its extent at byte \(offset) was damaged: those bytes are now zeros)")
                case .cutOff(let offset, let end):
                    add(path, "lost data: \(path) (its bytes \(offset) to \(end) were past the end of the cut-short image "
                              + "file: they read as zeros now)")
                case .lostXattrs(let kept, let lost):
                    let names = kept.map { VolumeCheck.show($0).debugDescription }.joined(separator: ", ")
                    if lost {
                        add(path, "lost extended attributes: \(path) (an extended attribute item was damaged: the attributes "
                                  + "it held that could not be read are removed\(kept.isEmpty ? "" : "; kept: " + names))")
                    } else {
                        add(path, "rewritten: \(path) (an extended attribute item was damaged after its attributes, "
                                  + "which are all kept: \(names))")
                    }
                case .lostXattrValues(let lost):
                    let names = lost.map { VolumeCheck.show($0).debugDescription }.joined(separator: ", ")
                    add(path, "lost extended attributes: \(path) (\(names): their values' chunk items were missing or "
                              + "damaged; the attributes are removed)")
                case .leftOut(let madeAs, let after):
                    // A file that no longer has a name (an orphan, or one only the left-out
                    // changes made) is named by the name they gave it, if any.
                    let why = "operations answered after commit \(after), whose journal frames were left out of the replay"
                    if let found = Self.path(of: change.inode, in: tree) {
                        add(found, "lost changes: \(found) (\(why), changed it)")
                    } else if let madeAs {
                        let parent = Self.path(of: madeAs.directory, in: tree) ?? "#\(madeAs.directory)"
                        let made = (parent == "/" ? "" : parent) + "/" + String(decoding: madeAs.name, as: UTF8.self)
                        add(made, "lost changes: \(made) (\(why), made it: it is not there)")
                    }
                }
            }
            for range in lostRanges {
                // The inodes a damaged leaf's range starts and ends in may have kept their
                // attributes (in the leaves around it) and lost other items; the ones
                // wholly inside it lost their attributes too (their names are removed).
                var boundary = [range.lower.object]
                if let upper = range.upper, upper > TreeKey(object: upper.object, kind: ItemKind.inode.rawValue, offset: 0) {
                    boundary.append(upper.object)
                }
                for inode in boundary where inode < ReservedObject.firstReserved {
                    guard (try? tree.inode(inode)) != nil, let path = Self.path(of: inode, in: tree) else { continue }
                    add(path, "lost items: \(path) (some of its attributes, extended attributes, names or extents were in a damaged tree block)")
                }
            }
            return lines.sorted { ($0.path, $0.line) < ($1.path, $1.line) }.map(\.line)
        }

        /// "/a/b" by the inode's first back reference, walked up to the root; nil when no
        /// name leads there.
        static func path(of inode: UInt64, in tree: FileSystemTree) -> String? {
            var parts: [String] = []
            var current = inode
            while current != 1 {
                guard parts.count < 4096, let link = (try? tree.links(of: current))?.first else { return nil }
                parts.append(String(decoding: link.name, as: UTF8.self))
                current = link.directory
            }
            return "/" + parts.reversed().joined(separator: "/")
        }
    }

    /// What one pass changed.
    struct PassChanges {
        var files: [FileChange] = []
        var repairs: [String] = []
    }
}
