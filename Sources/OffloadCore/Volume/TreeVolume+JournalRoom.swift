/// Journal room, claimed by operations before they change anything, so that a full image
/// refuses an operation with ENOSPC having changed nothing, however many operations claim
/// and append meanwhile (docs/ARCHITECTURE.md, "Shared locks off the request path").
///
/// The journal lock grants room ahead, up to `journalRoomRefill` of what the chain already
/// holds; operations claim from what is granted with one compare-and-swap
/// (`unclaimedJournalRoom`) and take the journal lock only to append their frame. A claim
/// the chain has no room for takes a spare segment (`MetadataLog.ensureRoom`: of the
/// chain's next segment's size, whose rest later grants use), as before. A spare is not
/// linked into the chain until a frame needs it, and is recorded in the block tree only
/// once linked (`TreeVolumeLogSpace`), so a crash leaves an unlinked one free; spares are
/// still taken no earlier than needed, since they hold blocks data could use. A claim is twice
/// its frame: a frame that does not fit the rest of a segment leaves that rest unused, and
/// the rest is shorter than the frame.
///
/// Invariant, under the journal lock, asserted in debug builds before and after every
/// append: the chain's room (`MetadataLog.roomAhead`) covers `grantedJournalRoom`, the
/// room claimed by operations that have not appended yet plus the room granted and not
/// claimed. An append spends its claim, a claim given back (`releaseRoom`) returns to the
/// unclaimed room, and a chain switch gives up the unclaimed room and makes room in the
/// new chain for what is claimed (`restoreJournalRoom`). Every spare holds at least
/// `journalSpareFloor`: `largestPooledFrame`, or the largest frame claimed under the lock
/// while claims for frames that large are outstanding (`largeJournalClaims`). At a
/// frame's append the chain's room still covers its
/// claim of twice the frame, so when the rest of the current segment is shorter than the
/// frame a spare exists, and it holds the frame: no frame needs a segment its claim did
/// not pay for, also on a full image whose free space is in pieces. Across a chain switch
/// this holds only when `restoreJournalRoom` finds the room (spares holding the floor
/// included); on an image with no free run that large it cannot (`journalRoomShort`),
/// and a frame claimed before the switch may then find no segment and fail the volume,
/// as any claim across a restore that failed (docs/ARCHITECTURE.md, the same section).
extension TreeVolume {
    /// The room a frame of `frame` bytes claims.
    static func journalClaim(forFrame frame: Int) -> Int { 2 * frame }

    /// Frames up to this size claim from the granted room without the journal lock; larger
    /// ones make their room under it.
    static let largestPooledFrame = 4 << 10
    /// What a grant under the journal lock adds beyond the claim that asked for it.
    static let journalRoomRefill = 32 << 10

    /// Claims `bytes` of journal room for a frame of `frame` bytes (`bytes` is its claim,
    /// `journalClaim(forFrame:)`, or what a reservation for it lacked): from the room
    /// granted ahead with one compare-and-swap when the frame is at most
    /// `largestPooledFrame`, else under the journal lock. `toppingUp`: the claim these
    /// bytes add to (a reservation made for a smaller frame). `.noSpace` when the image
    /// has no room for them (nothing changed), or the volume's failure.
    func claimJournalRoom(_ bytes: Int, frame: Int, toppingUp held: Int = 0) throws(FSError) {
        let pooled = frame <= Self.largestPooledFrame
        if pooled, takeUnclaimedJournalRoom(bytes) { return }
        try journalLock.withLock { () throws(FSError) in
            // A grant may have come meanwhile.
            if pooled, takeUnclaimedJournalRoom(bytes) { return }
            journalRoomGrants.add(1, ordering: .relaxed)
            let journal = try currentJournal()
            // What is granted and not claimed is given up first: it is room the chain
            // holds, granted again below, and counted as used it would make a spare taken
            // for nothing.
            grantedJournalRoom -= unclaimedJournalRoom.exchange(0, ordering: .relaxed)
            lowerJournalSpareFloor()
            if pooled {
                // The room the chain holds already beyond what is granted: the claim, and
                // up to a refill for the claims that follow, without allocating a segment.
                let ahead = journal.roomAhead - grantedJournalRoom
                if ahead >= bytes {
                    let refill = min(Self.journalRoomRefill, ahead - bytes)
                    grantedJournalRoom += bytes + refill
                    unclaimedJournalRoom.add(refill, ordering: .relaxed)
                    return
                }
            }
            // The chain's room for this claim, as a spare segment if need be, and every
            // spare holding this frame (smaller spares go back once the room is made).
            let floor = max(journalSpareFloor, frame)
            try journal.ensureRoom(total: grantedJournalRoom + bytes, largestFrame: frame, smallestSpare: floor)
            journalSpareFloor = floor
            grantedJournalRoom += bytes
            // Counted as the claim's excess when it ends (`largeClaimEnded`): what this
            // part adds to the excess of the claim it tops up.
            let excess = Self.largeClaimExcess(held + bytes) - Self.largeClaimExcess(held)
            if excess > 0 { largeJournalClaims.add(excess, ordering: .relaxed) }
        }
    }

    /// What a claim of `claim` bytes in all holds beyond a pooled frame's claim: every
    /// claim for a frame over `largestPooledFrame` has some, and a claim is at least twice
    /// the frame it appends, so an outstanding claim's frame is at most
    /// `largestPooledFrame` plus half its excess.
    static func largeClaimExcess(_ claim: Int) -> Int {
        max(0, claim - journalClaim(forFrame: largestPooledFrame))
    }

    /// A claim of `claim` bytes in all ended (appended, or given back): its excess leaves
    /// `largeJournalClaims`. Without the journal lock.
    private func largeClaimEnded(_ claim: Int) {
        let excess = Self.largeClaimExcess(claim)
        guard excess > 0 else { return }
        let before = largeJournalClaims.subtract(excess, ordering: .relaxed).oldValue
        assert(before >= excess, "a large journal claim of \(claim) bytes ended that was not counted")
    }

    /// Lowers `journalSpareFloor` to what the claims outstanding may still append: each
    /// claim is twice its frame (or is topped up under the lock, which raises the floor
    /// again), so none is for a frame over half the room claimed; and a frame over
    /// `largestPooledFrame` needs a large claim outstanding, whose frame is at most that
    /// plus half the excess of them all (`largeJournalClaims`; read under the lock, so
    /// every claim made is counted, and a claim that ended meanwhile only lowers it).
    /// Without the second bound, small claims outstanding kept the floor up after the
    /// large frame was appended, and on an image whose free runs were smaller than the
    /// floor they were refused meanwhile. Caller holds the journal lock, and gave up the
    /// unclaimed room (`grantedJournalRoom` is the room claimed).
    private func lowerJournalSpareFloor() {
        let largest = Self.largestPooledFrame + largeJournalClaims.load(ordering: .relaxed) / 2
        journalSpareFloor = max(Self.largestPooledFrame, min(journalSpareFloor, grantedJournalRoom / 2, largest))
    }

    private func takeUnclaimedJournalRoom(_ bytes: Int) -> Bool {
        var seen = unclaimedJournalRoom.load(ordering: .relaxed)
        while seen >= bytes {
            let (exchanged, original) = unclaimedJournalRoom.compareExchange(
                expected: seen, desired: seen - bytes, ordering: .relaxed)
            if exchanged { return true }
            seen = original
        }
        return false
    }

    /// Spends `claim` bytes of claimed room on the frame of `frame` bytes just appended to
    /// `journal`; what the frame did not need returns to the unclaimed room. Caller holds
    /// the journal lock.
    func spendJournalRoom(_ claim: Int, onFrame frame: Int, in journal: MetadataLog) {
        largeClaimEnded(claim)
        let spent = min(claim, Self.journalClaim(forFrame: frame))
        assert(claim >= Self.journalClaim(forFrame: frame), "a frame of \(frame) bytes appended on a claim of \(claim)")
        assert(grantedJournalRoom >= claim, "spent \(claim) journal bytes of \(grantedJournalRoom) granted")
        grantedJournalRoom -= spent
        if claim > spent { unclaimedJournalRoom.add(claim - spent, ordering: .relaxed) }
        assertJournalRoomCovered(in: journal)
    }

    /// Debug builds: the invariant (the chain's room covers what is granted), checked
    /// before and after every append. Caller holds the journal lock.
    func assertJournalRoomCovered(in journal: MetadataLog) {
        assert(journalRoomShort || journal.roomAhead >= grantedJournalRoom,
               "the journal chain holds \(journal.roomAhead) bytes for \(grantedJournalRoom) granted")
    }

    /// Makes room in `journal`, a chain just switched to, for the room claimed: claims
    /// made before the switch append to it. The room granted and not claimed is given up
    /// (the next claims are granted from the new chain's room), so that a switch takes a
    /// spare segment only for claims that its first segment does not hold. Caller holds
    /// the journal lock.
    func restoreJournalRoom(in journal: MetadataLog) {
        grantedJournalRoom -= unclaimedJournalRoom.exchange(0, ordering: .relaxed)
        assert(!unmounting || grantedJournalRoom == 0, "a claim outstanding at the unmount's chain switch")
        assert(!unmounting || largeJournalClaims.load(ordering: .relaxed) == 0,
               "large journal claims counted at the unmount's chain switch: \(largeJournalClaims.load(ordering: .relaxed)) bytes")
        lowerJournalSpareFloor()
        // A failure here leaves claimed frames to take their segments as they append, as
        // any chain does (`journalRoomShort`); an append that then finds no room fails the
        // volume.
        journalRoomShort = grantedJournalRoom > 0
            && (try? journal.ensureRoom(total: grantedJournalRoom, largestFrame: Self.largestPooledFrame,
                                        smallestSpare: journalSpareFloor)) == nil
    }

    /// Reserves journal room for one operation of up to `changeBytes` of encoded changes,
    /// before the caller changes anything it cannot undo (a file's data: format 1's
    /// `willChange`), so that a full image refuses it with `.noSpace` having changed
    /// nothing, however many operations reserve and append meanwhile. Returns the bytes
    /// claimed: pass them to the operation's `perform` (which spends them), or to
    /// `releaseRoom` when it changes nothing. One reservation a frame: reservations added
    /// up would hold a large frame's claim without having raised the spares' floor to it
    /// (`perform` then takes no lock for it).
    public func reserveRoom(changeBytes: Int) throws(FSError) -> Int {
        if let failure { throw failure }
        let frame = FrameHeader.size + 8 + changeBytes
        // A change no frame could hold is refused here, having changed nothing: `perform`
        // refuses its frame after the change, which fails the namespace. (The file
        // changes that could grow that large are cut into parts below this:
        // `OffloadedFile.changeRecordLimit`.)
        guard changeBytes <= FrameHeader.maximumPayload - 8 else { throw .noSpace }
        let claim = Self.journalClaim(forFrame: frame)
        try claimJournalRoom(claim, frame: frame)
        return claim
    }

    /// Journal room claimed by operations whose frames are not appended yet.
    var claimedJournalRoom: Int {
        journalLock.withLock { grantedJournalRoom - unclaimedJournalRoom.load(ordering: .relaxed) }
    }

    /// Gives back a claim (`reserveRoom`, all of it) that no frame used. Without the
    /// journal lock.
    public func releaseRoom(_ bytes: Int) {
        guard bytes > 0 else { return }
        largeClaimEnded(bytes)
        unclaimedJournalRoom.add(bytes, ordering: .relaxed)
    }
}
