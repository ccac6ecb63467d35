import Synchronization

/// Counts the punches of a volume's image as they finish (`TreeVolume.punch` of pending
/// frees, the block space's unprepared blocks). `VolumeFileBlocks` gives disk space to
/// files' blocks ahead, a step at a time, and trusts the blocks of that step to have it
/// only while no punch has finished since the step's `fallocate` began: a punched block
/// has none again, and a write through the mapping to it on a full disk would be SIGBUS
/// instead of ENOSPC. A block punched as a pending free is handed out only after a later
/// commit retired it, which waits for that punch (`VolumePunches`), so the count has moved
/// before the block can be allocated again.
final class PunchCounter: Sendable {
    private let count = Atomic<UInt64>(0)

    /// Punches finished so far.
    var value: UInt64 { count.load(ordering: .acquiring) }

    /// Called after each punch, whether it succeeded or not (a failed punch may have
    /// punched part of its range).
    func finished() { count.wrappingAdd(1, ordering: .releasing) }
}
