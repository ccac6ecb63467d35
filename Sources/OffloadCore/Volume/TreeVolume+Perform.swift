import Synchronization

extension TreeVolume {
    /// Runs one operation: makes room for its journal frame, joins the open generation,
    /// records `changes`, appends the frame, leaves. An operation the journal has no room
    /// for (the image is full) or that the delta refuses fails having changed nothing; a
    /// frame that cannot be written after all (an I/O error) fails the volume: the delta
    /// holds a change the journal does not.
    /// `reserved`: room `reserveRoom` reserved for this operation, which ends here.
    /// `commitsAtBudget`: commit after the frame when the journal or the open generation
    /// reached `limits` (false: the caller commits, `isOverBudget`).
    /// `born`: the inode numbers this operation gave out, so that one made and dropped
    /// within a generation leaves it altogether (`DeltaGeneration.record`).
    public func perform(_ changes: [JournalChange], born: Range<UInt64> = 0..<0, reserved: Int = 0,
                        commitsAtBudget: Bool = true) throws(FSError) {
        // The claim ends here, whatever happens: spent by the append, or given back on the
        // way out.
        var held = reserved
        defer { releaseRoom(held) }
        // So does an admission, once the delta counts the changes (or on the way out).
        var admitted = 0
        defer { endAdmission(&admitted) }
        if let failure { throw failure }
        // Encoded once, before joining: the generation is patched in afterwards.
        var payload = VolumeJournalFrame.encode(generation: 0, changes)
        guard payload.count <= FrameHeader.maximumPayload else {
            throw .invalidArgument("an operation of \(payload.count) journal bytes exceeds a frame's \(FrameHeader.maximumPayload)")
        }
        let frame = FrameHeader.size + payload.count
        // A file's data change (it reserved its room) and an operation that releases are
        // let through: the data is bounded by what it leaves free (`blocksHeldForCommits`),
        // and a release is what gives a full image its space back.
        if reserved == 0, !JournalChange.release(changes) { admitted = try admit(changes, born: born) }
        // The frame's room: claimed by the reservation, or now (on the common path without
        // the journal lock: `TreeVolume+JournalRoom.swift`).
        let claim = Self.journalClaim(forFrame: frame)
        // A reservation that holds the claim was made for a frame at least this large (one
        // claim a frame: `reserveRoom`'s callers reserve a change's room anew, not in
        // parts), under the journal lock when that frame is over `largestPooledFrame`,
        // which raised the spares' floor to it; a top-up is claimed on this frame.
        if held < claim {
            try claimJournalRoom(claim - held, frame: frame, toppingUp: held)
            held = claim
        }
        let ticket = delta.join()
        let appended: MetadataLog
        do {
            defer { delta.leave(ticket) }
            try delta.record(changes, born: born, in: ticket)
            endAdmission(&admitted)
            if JournalChange.frees(changes) { freeingOperations.add(1, ordering: .relaxed) }
            VolumeJournalFrame.tag(&payload, generation: ticket.generation.number)
            do {
                // The chain a commit may have switched to meanwhile: the frame goes there.
                appended = try journalLock.withLock { () throws(FSError) -> MetadataLog in
                    let journal = try currentJournal()
                    assertJournalRoomCovered(in: journal)
                    try journal.append(payload: payload)
                    journalBytesMirror.store(journal.appendedBytes, ordering: .relaxed)
                    journalWriteOffset.store(journal.writeOffset, ordering: .relaxed)
                    lastAppendNanoseconds = MonotonicClock.nanoseconds()
                    spendJournalRoom(held, onFrame: frame, in: journal)
                    held = 0
                    return journal
                }
            } catch {
                failure = error
                throw error
            }
        }
        // Outside the generation (a commit waits for the operations inside it). The
        // operation is done whatever the commit does: its frame is in the journal, so a
        // commit that fails here fails the volume (`failure`, thrown by every later change)
        // but not this operation, which replay brings back.
        let load = ticket.generation.commitLoad
        if commitsAtBudget, limits.use(journalBytes: appended.appendedBytes, load: load) == .reached
            || roomUse(openObjects: load.objects) == .reached {
            _ = try? commit()
        }
    }

    /// True when the journal since the last commit, or the open generation's changed
    /// objects, reached `limits`: what makes `perform` commit by itself. Callers that
    /// perform with `commitsAtBudget: false` (operations that share a lock the commit's
    /// close must not interleave with) commit when they can.
    public var isOverBudget: Bool { budget == .reached }

    /// How near the journal since the last commit and the open generation's changed
    /// objects are to `limits`: `.reached` makes `perform` commit by itself (or its
    /// caller, `isOverBudget`); from `.nearing` (three quarters) a mount's maintenance
    /// commits without waiting for its next tick, so that operations seldom reach the
    /// limits and commit on their own path (docs/ARCHITECTURE.md, "When format 2
    /// commits").
    public var budget: BudgetUse {
        let load = delta.openLoad
        // The room's use is read once (it takes the delta's lock below `ampleRoomBlocks`).
        let room = roomUse(openObjects: load.objects)
        let limited = limits.use(journalBytes: journalBytesSinceCommit, load: load)
        if limited == .reached || room == .reached { return .reached }
        return limited == .nearing || room == .nearing ? .nearing : .under
    }

    public enum BudgetUse: Sendable, Equatable {
        case under, nearing, reached
    }
}
