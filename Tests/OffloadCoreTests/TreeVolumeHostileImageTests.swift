import XCTest
import OffloadCore
import OffloadSimulation
import SplitMix

/// A format 2 image with damage anywhere (slots, tree nodes, journal frames, data) must
/// open with a clear error or open and work: never trap, never hang. Bytes are changed
/// at random in the blocks the image uses, many images over; each that opens is read in
/// full (every item of both trees, every read a request makes) and committed.
/// Replay one seed with `OFFLOADFS_VOLUME_HOSTILE_SEED=N`.
final class TreeVolumeHostileImageTests: XCTestCase {
    static let capacity: UInt64 = 2 << 20

    func testDamageAnywhereIsAnErrorOrAWorkingImageNeverATrap() throws {
        let seed = ProcessInfo.processInfo.environment["OFFLOADFS_VOLUME_HOSTILE_SEED"].flatMap(UInt64.init) ?? 1
        var rng = SplitMix64(seed: seed)
        let original = try Self.sampleImage(seed: seed)
        // The blocks holding anything: damage goes there.
        let used = stride(from: 0, to: original.count, by: BackingStore.blockSize).filter { start in
            original[start..<start + BackingStore.blockSize].contains { $0 != 0 }
        }
        XCTAssertGreaterThan(used.count, 10)
        var refused: [String: Int] = [:]
        var opened = 0
        for _ in 0..<300 {
            var image = original
            for _ in 0..<(1 + rng.next() % 6) {
                // Slots a third of the time: they are what every open reads first.
                let block = rng.next() % 3 == 0 ? Int(rng.next() % 2) * BackingStore.blockSize
                    : used[Int(rng.next() % UInt64(used.count))]
                let at = block + Int(rng.next() % UInt64(BackingStore.blockSize))
                image[at] = rng.next() % 4 == 0 ? 0 : UInt8.random(in: 0...255, using: &rng)
            }
            do {
                let volume = try TreeVolume.open(CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: image))
                try Self.exercise(volume)
                opened += 1
            } catch let error as FSError {
                let kind = "\(error)".prefix(40)
                refused[String(kind), default: 0] += 1
            }
        }
        print("hostile volume images: \(opened) opened and worked, refused: \(refused.sorted { $0.value > $1.value }.prefix(6))")
        XCTAssertGreaterThan(opened, 0, "no damaged image opened (the damage never missed a checked structure?)")
        XCTAssertGreaterThan(refused.values.reduce(0, +), 0, "no damage was ever refused")
    }

    /// A small image: files, directories, xattrs, symlinks, commits, and operations only
    /// in the journal (synced).
    static func sampleImage(seed: UInt64) throws -> [UInt8] {
        let disk = CrashSimulatingStorage(maximumBytes: Int(capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: capacity, imageID: 42, nameHashKey: SipHash24(key0: 5, key1: 6))
        let script = NamespaceChangeScript(seed: seed, refusals: false)
        script.longMemoryPieces = true
        script.model.refusesLongMemoryPieces = false
        script.perform = { changes, _ in
            try volume.perform(changes)
            for change in changes { script.model.apply(change) }
        }
        try script.makeRoot()
        for round in 0..<3 {
            for _ in 0..<40 { try script.step() }
            if round < 2 { try volume.commit() }
        }
        try volume.sync()
        var rng = SplitMix64(seed: seed)
        return disk.crashImage(using: &rng, keep: 1, torn: 0)
    }

    /// What a mount does with an image: every read, a change, a commit.
    static func exercise(_ volume: TreeVolume) throws {
        _ = try volume.filesystem.tree.check()
        _ = try volume.space.blockTree.tree.check()
        let reader = try volume.reader()
        var inodes = Set<UInt64>()
        try volume.filesystem.tree.scan(from: .minimum, through: .maximum) { key, _ in
            if key.object < ReservedObject.firstReserved { inodes.insert(key.object) }
            return true
        }
        for inode in inodes.sorted() {
            _ = try reader.inode(inode)
            _ = try reader.entries(directory: inode)
            _ = try reader.symlinkTarget(inode)
            for name in try reader.xattrNames(inode) { _ = try reader.xattr(inode, name: name) }
            _ = try volume.filesystem.extents(inode, overlapping: 0..<UInt64.max)
            _ = try volume.filesystem.links(of: inode)
        }
        _ = try reader.orphans()
        if let root = try reader.inode(1) {
            var changed = root
            changed.permissions = 0o711
            try volume.perform([.attributes(inode: 1, changed)])
        }
        try volume.commit()
    }
}
