/// An image read from another storage with every change kept in memory: what fsck
/// replays the journal into to check the tree a mount's replay would commit, without
/// writing one byte of the image (docs/ARCHITECTURE.md, "fsck checks the tree the
/// replay leaves").
///
/// Reads see the changes made here over the base's bytes: written pages from memory,
/// punched and zeroed ranges as zeros, the rest from the base. Nothing is ever written to
/// the base, so it may be read-only (fsck's check opens the image with a shared lock).
/// `sync` does nothing: nothing here is durable. There is no mapping (`map` is
/// `.notSupported`): `TreeVolume` reads and writes its nodes through `read` and `write`;
/// files' bytes, which go through the mapping, are not this storage's business.
///
/// Memory: one 4 KiB page per page written (a replay's commit writes the nodes the
/// replayed changes touch and the block tree's changes: it follows the journal, not the
/// tree), and one range per run of pages cleared.
///
/// Thread safety: a mutex around all of it (the volume's punch runs on a queue of its own).
public final class OverlayImageStorage: ImageStorage, @unchecked Sendable {
    static let pageSize = 4096
    private let base: any ImageStorage
    /// The base's length, read once: nothing here writes the base (and a `FileImageStorage`
    /// asks the kernel each time).
    private let baseLength: UInt64
    private let state: PthreadMutex<State>

    struct State {
        var length: UInt64
        /// Pages written here, whole (bytes past `length` are zeros).
        var pages: [UInt64: [UInt8]] = [:]
        /// Pages punched or zeroed here and not written since: they read as zeros.
        var cleared = RangeSet<UInt64>()
    }

    public init(over base: any ImageStorage) {
        self.base = base
        baseLength = base.length
        state = PthreadMutex(State(length: baseLength))
    }

    public var name: String { base.name }
    public var length: UInt64 { state.withLock { $0.length } }
    public var diskBytes: UInt64 { base.diskBytes }

    public func map(byteCount: Int) throws(FSError) -> UnsafeMutableRawPointer { throw .notSupported }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(FSError) -> Int {
        try state.withLock { (s) throws(FSError) -> Int in
            guard offset < s.length, buffer.count > 0 else { return 0 }
            let count = Int(min(UInt64(buffer.count), s.length - offset))
            var done = 0
            while done < count {
                let at = offset + UInt64(done)
                let page = at / UInt64(Self.pageSize)
                let within = Int(at % UInt64(Self.pageSize))
                let n = min(Self.pageSize - within, count - done)
                let out = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + n])
                if let bytes = s.pages[page] {
                    bytes.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[within..<within + n])) }
                } else if s.cleared.contains(page) || at >= baseLength {
                    out.initializeMemory(as: UInt8.self, repeating: 0)
                } else {
                    let got = try base.read(into: out, at: at)
                    if got < n {
                        UnsafeMutableRawBufferPointer(rebasing: out[got...]).initializeMemory(as: UInt8.self, repeating: 0)
                    }
                }
                done += n
            }
            return count
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        try state.withLock { (s) throws(FSError) in
            guard offset + UInt64(bytes.count) <= s.length else {
                throw .invalidArgument("a write past the end of the overlaid image")
            }
            var done = 0
            while done < bytes.count {
                let at = offset + UInt64(done)
                let page = at / UInt64(Self.pageSize)
                let within = Int(at % UInt64(Self.pageSize))
                let n = min(Self.pageSize - within, bytes.count - done)
                var contents: [UInt8]
                if let held = s.pages[page] { contents = held } else { contents = try pageRead(page, s) }
                contents.withUnsafeMutableBytes {
                    UnsafeMutableRawBufferPointer(rebasing: $0[within..<within + n])
                        .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[done..<done + n]))
                }
                s.pages[page] = contents
                s.cleared.remove(contentsOf: page..<page + 1)
                done += n
            }
        }
    }

    /// Page `page` as it reads before this storage held it: zeros where cleared or past
    /// the base's end, the base's bytes otherwise.
    private func pageRead(_ page: UInt64, _ s: State) throws(FSError) -> [UInt8] {
        var contents = [UInt8](repeating: 0, count: Self.pageSize)
        let at = page * UInt64(Self.pageSize)
        guard !s.cleared.contains(page), at < baseLength else { return contents }
        _ = try contents.withUnsafeMutableBytes { buffer in
            Result { () throws(FSError) in try base.read(into: buffer, at: at) }
        }.get()
        return contents
    }

    /// The base's answer where no page of `range` was written here (a page written here
    /// may hold bytes; one cleared reads as zeros here, but the base's answer, true when
    /// unsure, is the safe one): what a replay's scrub of the free space asks
    /// (`TreeVolume.scrubFreeSpaceAsGroupsLoad`), which then punches only here.
    public func mayHoldData(_ range: Range<UInt64>) -> Bool {
        guard !range.isEmpty else { return false }
        let pages = range.lowerBound / UInt64(Self.pageSize)..<(range.upperBound + UInt64(Self.pageSize) - 1) / UInt64(Self.pageSize)
        let written = state.withLock { s in
            UInt64(s.pages.count) < UInt64(pages.count) ? s.pages.keys.contains { pages.contains($0) }
                                                        : pages.contains { s.pages[$0] != nil }
        }
        return written || (range.lowerBound < baseLength && base.mayHoldData(range.clamped(to: 0..<baseLength)))
    }

    public func reserve(_ range: Range<UInt64>) throws(FSError) {
        state.withLock { s in s.length = max(s.length, range.upperBound) }
    }

    public func punch(_ range: Range<UInt64>) throws(FSError) {
        guard !range.isEmpty else { return }
        precondition(range.lowerBound % UInt64(Self.pageSize) == 0 && range.upperBound % UInt64(Self.pageSize) == 0,
                     "punched ranges are block-aligned")
        let pages = range.lowerBound / UInt64(Self.pageSize)..<range.upperBound / UInt64(Self.pageSize)
        state.withLock { s in
            s.cleared.insert(contentsOf: pages)
            if UInt64(s.pages.count) < UInt64(pages.count) {
                s.pages = s.pages.filter { !pages.contains($0.key) }
            } else {
                for page in pages { s.pages[page] = nil }
            }
        }
    }

    public func zero(_ range: Range<UInt64>) throws(FSError) {
        try punch(range)
        try reserve(range)
    }

    public func setLength(_ length: UInt64) throws(FSError) {
        try state.withLock { (s) throws(FSError) in
            if length < s.length {
                // What a shorter file cuts off reads as zeros if the file grows again.
                let firstGone = (length + UInt64(Self.pageSize) - 1) / UInt64(Self.pageSize)
                let end = (s.length + UInt64(Self.pageSize) - 1) / UInt64(Self.pageSize)
                if firstGone < end { s.cleared.insert(contentsOf: firstGone..<end) }
                s.pages = s.pages.filter { $0.key < firstGone }
                let tail = Int(length % UInt64(Self.pageSize))
                if tail > 0 {
                    var last: [UInt8]
                    if let held = s.pages[firstGone - 1] { last = held } else { last = try pageRead(firstGone - 1, s) }
                    for i in tail..<Self.pageSize { last[i] = 0 }
                    s.pages[firstGone - 1] = last
                }
            }
            s.length = length
        }
    }

    public func sync() throws(FSError) {}
}
