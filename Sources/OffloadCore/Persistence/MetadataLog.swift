import Synchronization

/// An append-only chain of frames (`FrameHeader`) written into image blocks: the journal,
/// and each checkpoint (format 1). Segments come from a `MetadataLogSpace`.
///
/// The chain lives in segments, contiguous block ranges from its `MetadataLogSpace`. A frame
/// never crosses a segment's end; every segment keeps room for one link frame at its end,
/// and when the next frame does not fit, a new segment is allocated and a link frame
/// pointing to it ends the current one. Readers follow the links (`MetadataLogReader`).
///
/// Frames are copied into the shared mapping, i.e. into the image file's page cache: once
/// `append` returns, the frame survives the daemon being killed (the kernel writes the
/// page back). Surviving power loss takes a sync of the image (`BackingStore.sync()`).
///
/// Segments grow: the first is `firstSegmentBytes`, each next one twice the previous, up
/// to `segmentBytes`. A chain that stays short (the journal of a quiet mount, the
/// checkpoint of a small tree) then takes a few KiB, not a whole 1 MiB segment, which
/// matters on a small image, where the metadata of two commits is kept.
///
/// Thread safety: every method takes the log's mutex; appends are atomic and ordered.
public final class MetadataLog: Sendable {
    public let imageID: UInt64
    public let stream: UInt64
    let store: any MetadataLogSpace
    let segmentBytes: Int
    private let state: PthreadMutex<State>
    /// `State.appendedBytes`, stored with it under the lock, read without it.
    private let appendedMirror = Atomic<UInt64>(0)
    /// `State.writeOffset`, stored with it under the lock, read without it.
    private let writeOffsetMirror = Atomic<UInt64>(0)

    /// The first segment of a new journal chain.
    public static let firstJournalSegmentBytes = 64 << 10

    struct State {
        var segments: [LogSegment]
        /// Byte offset in the image where the next frame goes.
        var writeOffset: UInt64
        var nextSequence: UInt64
        /// The size to ask for when the next segment is needed.
        var nextSegmentBytes: Int
        var frameBytes = ByteWriter(capacity: 4096)
        var appendedBytes: UInt64 = 0
        /// Set once the chain continues in another log (`continueInNewLog`).
        var closed = false
        /// Segments allocated ahead by `ensureRoom`, not linked yet: the next segments of
        /// the chain, taken before any new allocation.
        var spares: [LogSegment] = []
    }

    /// Starts a chain in a newly allocated segment of `firstSegmentBytes` (rounded up to
    /// blocks); its first frame gets `firstSequence`. Later segments grow to `segmentBytes`.
    public init(store: any MetadataLogSpace, imageID: UInt64, stream: UInt64, firstSequence: UInt64,
                segmentBytes: Int = 1 << 20, firstSegmentBytes: Int = MetadataLog.firstJournalSegmentBytes) throws(FSError) {
        let first = min(firstSegmentBytes, segmentBytes)
        let segment = try Self.allocateSegment(store, atLeast: first, minimum: LogSegment.linkFrameSize * 4)
        self.store = store
        self.imageID = imageID
        self.stream = stream
        self.segmentBytes = segmentBytes
        state = PthreadMutex(State(segments: [segment], writeOffset: segment.start, nextSequence: firstSequence,
                                   nextSegmentBytes: min(segmentBytes, 2 * first)))
        writeOffsetMirror.store(segment.start, ordering: .relaxed)
    }

    private init(store: any MetadataLogSpace, imageID: UInt64, stream: UInt64, segment: LogSegment,
                 firstSequence: UInt64, segmentBytes: Int, nextSegmentBytes: Int, spares: [LogSegment]) {
        self.store = store
        self.imageID = imageID
        self.stream = stream
        self.segmentBytes = segmentBytes
        state = PthreadMutex(State(segments: [segment], writeOffset: segment.start, nextSequence: firstSequence,
                                   nextSegmentBytes: nextSegmentBytes, spares: spares))
        writeOffsetMirror.store(segment.start, ordering: .relaxed)
    }

    /// The first segment: where a reader starts.
    public var head: LogSegment { state.withLock { $0.segments[0] } }
    /// Every segment of the chain, in order (to free them once the chain is obsolete).
    public var segments: [LogSegment] { state.withLock { $0.segments } }
    /// The sequence number the next frame will get; also the number of frames written
    /// when the chain started at 0.
    public var nextSequence: UInt64 { state.withLock { $0.nextSequence } }
    /// Bytes of frames appended so far (what replay would read).
    /// Without the log's lock: every operation's budget check reads it (`appendedMirror`).
    public var appendedBytes: UInt64 { appendedMirror.load(ordering: .relaxed) }
    /// Where the next frame goes, as of the last append (without the log's lock; a frame
    /// that does not fit the current segment goes to the next one instead).
    public var writeOffset: UInt64 { writeOffsetMirror.load(ordering: .relaxed) }

    /// Spare segments allocated ahead and not linked yet.
    public var spareCount: Int { state.withLock { $0.spares.count } }
    /// The spare segments' byte ranges (tests, checks).
    public var spareRanges: [Range<UInt64>] { state.withLock { $0.spares.map(\.range) } }

    /// Bytes of frames (headers included) the chain takes without allocating: the current
    /// segment's room and the spare segments', each less its link frame. What
    /// `ensureRoom` makes room for.
    public var roomAhead: Int {
        state.withLock { s in
            Self.room(in: s) + s.spares.reduce(0) { $0 + Int($1.length) - LogSegment.linkFrameSize }
        }
    }

    /// Appends one frame whose payload is `payload` (encoded records). Atomic: a reader
    /// sees the whole frame or (after a crash mid-copy) a bad checksum that ends the chain.
    public func append(payload: [UInt8]) throws(FSError) {
        // A reader refuses longer frames; never write one it could not read back.
        guard payload.count <= FrameHeader.maximumPayload else {
            throw .invalidArgument("a metadata frame of \(payload.count) bytes exceeds \(FrameHeader.maximumPayload)")
        }
        try state.withLock { (s) throws(FSError) in
            precondition(!s.closed, "appending to a metadata log that continues elsewhere")
            let frameSize = FrameHeader.size + payload.count
            if Self.room(in: s) < frameSize {
                let minimum = frameSize + LogSegment.linkFrameSize
                let next = try linkNextSegment(wanted: max(s.nextSegmentBytes, minimum), minimum: minimum, &s)
                s.nextSegmentBytes = min(segmentBytes, 2 * s.nextSegmentBytes)
                s.segments.append(next)
                s.writeOffset = next.start
                writeOffsetMirror.store(next.start, ordering: .relaxed)
            }
            try payload.withBytes { (buffer) throws(FSError) in try writeFrame(kind: .records, payload: buffer, &s) }
        }
    }

    /// The image bytes the next frames of up to `bytes` in all would be written to: from
    /// the write position on, inside the current segment, and when that segment's room is
    /// shorter, the start of the spare segment the chain continues in (a spare allocated
    /// later, by the append itself, is not known yet). Empty once the chain continues in
    /// another log.
    public func upcomingBytes(_ bytes: Int) -> UpcomingBytes {
        state.withLock { s in
            guard !s.closed else { return UpcomingBytes() }
            let end = s.segments[s.segments.count - 1].range.upperBound
            var upcoming = UpcomingBytes(current: s.writeOffset..<min(end, s.writeOffset + UInt64(bytes)))
            if Self.room(in: s) < bytes, let spare = s.spares.first {
                upcoming.spare = spare.start..<min(spare.range.upperBound, spare.start + UInt64(bytes))
            }
            return upcoming
        }
    }

    /// Bytes of frame (header included) the current segment still takes, keeping room
    /// for its link frame.
    private static func room(in s: State) -> Int {
        let end = s.segments[s.segments.count - 1].range.upperBound
        return max(0, Int(end - s.writeOffset) - LogSegment.linkFrameSize)
    }

    /// Makes sure frames of `total` bytes in all (headers included), none longer than
    /// `largestFrame`, can be appended without allocating: the current segment's room
    /// and the spare segments together hold `total`, and some segment holds
    /// `largestFrame`. Allocates a spare (metadata may use the store's reserve) when they
    /// do not, of at least `smallestSpare` bytes of frames (format 2's claims: every spare
    /// then holds any frame claimed, so one that does not fit the rest of a segment fits
    /// the next spare, whichever it is); `.noSpace` when the image has no room left for
    /// it, having changed nothing. Spares holding less than `smallestSpare` (taken while
    /// it was smaller) do not count, and once the room is made they go back to the store:
    /// unlinked, nothing names them. What the journals' reservations build on
    /// (`NamespaceJournal.reserve`, `TreeVolume.claimJournalRoom`).
    public func ensureRoom(total: Int, largestFrame: Int, smallestSpare: Int = 0) throws(FSError) {
        let released = try state.withLock { (s) throws(FSError) -> [LogSegment] in
            let holds = { (spare: LogSegment) in Int(spare.length) - LogSegment.linkFrameSize >= smallestSpare }
            let spareRoom = s.spares.reduce(0) { $0 + (holds($1) ? Int($1.length) - LogSegment.linkFrameSize : 0) }
            var missing = total - Self.room(in: s) - spareRoom
            let fits = Self.room(in: s) >= largestFrame
                || s.spares.contains { holds($0) && Int($0.length) - LogSegment.linkFrameSize >= largestFrame }
            if missing > 0 || !fits {
                missing = max(missing, fits ? 0 : largestFrame)
                let wanted = max(s.nextSegmentBytes, missing + LogSegment.linkFrameSize)
                let minimum = max(missing, smallestSpare) + LogSegment.linkFrameSize
                s.spares.append(try Self.allocateSegment(store, atLeast: max(wanted, minimum), minimum: minimum, spare: true))
            }
            // Nearly always none (the floor rose since they were taken): no array then.
            guard s.spares.contains(where: { !holds($0) }) else { return [] }
            let small = s.spares.filter { !holds($0) }
            s.spares.removeAll { !holds($0) }
            return small
        }
        for spare in released { store.releaseSpareSegment(spare.range) }
    }

    /// Ends this chain with a link to a new segment (of `firstSegmentBytes`, by default
    /// `firstJournalSegmentBytes`; or a spare segment) and returns a log that continues
    /// the same stream there (with this log's spare segments). `wholly`: the segment is
    /// at least `firstSegmentBytes` (`.noSpace` otherwise). The new log's segments are its own, so this log's segments can be
    /// freed once nothing needs them (after a checkpoint). A failure leaves this chain as
    /// it was (a segment whose link could not be written goes back to the store).
    /// `keepingSpares` false gives the spare segments back to the store instead (a chain
    /// nothing appends to again: a spare would never be linked, and its blocks would stay
    /// taken for as long as the store lives).
    public func continueInNewLog(firstSegmentBytes: Int? = nil, wholly: Bool = false,
                                 keepingSpares: Bool = true) throws(FSError) -> MetadataLog {
        let (log, released) = try state.withLock { (s) throws(FSError) -> (MetadataLog, [LogSegment]) in
            precondition(!s.closed)
            let first = firstSegmentBytes ?? min(Self.firstJournalSegmentBytes, segmentBytes)
            let next = try linkNextSegment(wanted: first, minimum: wholly ? first : LogSegment.linkFrameSize * 4, &s)
            s.closed = true
            defer { s.spares = [] }
            let log = MetadataLog(store: store, imageID: imageID, stream: stream, segment: next,
                                  firstSequence: s.nextSequence, segmentBytes: segmentBytes,
                                  nextSegmentBytes: min(segmentBytes, 2 * first), spares: keepingSpares ? s.spares : [])
            return (log, keepingSpares ? [] : s.spares)
        }
        for spare in released { store.releaseSpareSegment(spare.range) }
        return log
    }

    /// Gives the chain's blocks back to the store. Only once no superblock on disk
    /// points to the chain any more.
    public func releaseSegments() {
        let (segments, spares) = state.withLock { s -> ([LogSegment], [LogSegment]) in
            s.closed = true
            defer { s.segments = []; s.spares = [] }
            return (s.segments, s.spares)
        }
        for segment in segments { store.releaseLogSegment(segment.range) }
        for spare in spares { store.releaseSpareSegment(spare.range) }
    }

    /// Ends the current segment with a link to the next one, and returns it: a spare
    /// segment that holds `minimum` bytes, else a new one of at least `wanted`.
    private func linkNextSegment(wanted: Int, minimum: Int, _ s: inout State) throws(FSError) -> LogSegment {
        let spare = s.spares.firstIndex { $0.length >= UInt64(minimum) }
        let next: LogSegment
        if let spare {
            next = s.spares[spare]
        } else {
            next = try Self.allocateSegment(store, atLeast: wanted, minimum: minimum)
        }
        do throws(FSError) {
            try writeLink(to: next, &s)
        } catch {
            if spare == nil { store.releaseLogSegment(next.range) }
            throw error
        }
        if let spare {
            s.spares.remove(at: spare)
            store.linkSpareSegment(next.range)
        }
        return next
    }

    private func writeLink(to next: LogSegment, _ s: inout State) throws(FSError) {
        var payload = ByteWriter(capacity: 16)
        next.encodeLink(into: &payload)
        try payload.bytes.withBytes { (buffer) throws(FSError) in try writeFrame(kind: .link, payload: buffer, &s) }
    }

    /// Writes one frame at the write offset. If the image refuses the bytes, nothing
    /// moves: the next frame goes to the same place (its sequence number is the same),
    /// over whatever part of this one reached the page.
    private func writeFrame(kind: FrameHeader.Kind, payload: UnsafeRawBufferPointer, _ s: inout State) throws(FSError) {
        s.frameBytes.removeAll(keepingCapacity: true)
        FrameHeader.encode(imageID: imageID, stream: stream, sequence: s.nextSequence, kind: kind,
                           payload: payload, into: &s.frameBytes)
        let end = s.segments[s.segments.count - 1].range.upperBound
        precondition(s.writeOffset + UInt64(s.frameBytes.count) <= end, "frame overruns its segment")
        try s.frameBytes.bytes.withBytes { (buffer) throws(FSError) in try store.writeLog(buffer, at: s.writeOffset) }
        s.writeOffset += UInt64(s.frameBytes.count)
        s.appendedBytes += UInt64(s.frameBytes.count)
        appendedMirror.store(s.appendedBytes, ordering: .relaxed)
        writeOffsetMirror.store(s.writeOffset, ordering: .relaxed)
        s.nextSequence += 1
    }

    private static func allocateSegment(_ store: any MetadataLogSpace, atLeast bytes: Int, minimum: Int,
                                        spare: Bool = false) throws(FSError) -> LogSegment {
        let range = spare ? try store.allocateSpareSegment(byteCount: bytes, minimumBytes: minimum)
                          : try store.allocateLogSegment(byteCount: bytes, minimumBytes: minimum)
        guard range.length >= UInt64(minimum) else {
            if spare { store.releaseSpareSegment(range) } else { store.releaseLogSegment(range) }
            throw .noSpace
        }
        return LogSegment(start: range.lowerBound, length: range.length)
    }
}

/// The image bytes a journal's next frames go to (`MetadataLog.upcomingBytes`): inside the
/// current segment, and the start of the spare segment the chain continues in when the
/// current one's room is shorter. Two ranges at most, held without an allocation: every
/// operation of a format 2 namespace asks before it takes the lock
/// (`TreeVolume.prepareJournalAppend`), and three arrays a call were a measurable part of
/// a create's CPU.
public struct UpcomingBytes: Equatable, Sendable {
    public var current: Range<UInt64>?
    public var spare: Range<UInt64>?

    public init(current: Range<UInt64>? = nil, spare: Range<UInt64>? = nil) {
        self.current = current
        self.spare = spare
    }

    /// The ranges widened to whole image blocks (`BackingStore.blocks(touchedBy:)`), as
    /// bytes; empty ones left out.
    public func wholeBlocks() -> UpcomingBytes {
        func widened(_ range: Range<UInt64>?) -> Range<UInt64>? {
            guard let range, !range.isEmpty else { return nil }
            let blocks = BackingStore.blocks(touchedBy: range)
            return (blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift)
        }
        return UpcomingBytes(current: widened(current), spare: widened(spare))
    }

    /// Whether every range of `other` lies inside one of these.
    public func covers(_ other: UpcomingBytes) -> Bool {
        func holds(_ held: Range<UInt64>?, _ range: Range<UInt64>) -> Bool {
            guard let held else { return false }
            return held.lowerBound <= range.lowerBound && range.upperBound <= held.upperBound
        }
        func inside(_ range: Range<UInt64>?) -> Bool {
            guard let range else { return true }
            return holds(current, range) || holds(spare, range)
        }
        return inside(other.current) && inside(other.spare)
    }

    /// No range at all (a journal that continues in another log).
    public var isEmpty: Bool { current == nil && spare == nil }

}
