import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// A volume commits by itself when the journal since the last commit reaches its budget,
/// or the open generation holds its cap of changed objects or of item bytes, so neither
/// replay after a crash nor the delta's memory (and its commit's leaves) grows without
/// bound; nothing is lost on the way.
final class TreeVolumeLimitsTests: XCTestCase {
    func testTheJournalBudgetAndTheDirtyObjectCapStartCommits() throws {
        for limits in [TreeVolume.Limits(journalBytes: 8192, dirtyObjects: 1_000_000, itemBytes: 1 << 30),
                       TreeVolume.Limits(journalBytes: 1 << 30, dirtyObjects: 10, itemBytes: 1 << 30),
                       TreeVolume.Limits(journalBytes: 1 << 30, dirtyObjects: 1_000_000, itemBytes: 4096)] {
            let disk = CrashSimulatingStorage(maximumBytes: 8 << 20)
            let volume = try TreeVolume.format(disk, capacityBytes: 8 << 20, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 1))
            volume.limits = limits
            let script = NamespaceChangeScript(seed: 4, refusals: false)
            script.longMemoryPieces = true
            script.model.refusesLongMemoryPieces = false
            var largestJournal: UInt64 = 0, largestGeneration = 0, largestItemBytes = 0, largestOperation = 0
            script.perform = { changes, _ in
                try volume.perform(changes)
                for change in changes { script.model.apply(change) }
                largestJournal = max(largestJournal, (volume.journal?.appendedBytes ?? 0))
                largestGeneration = max(largestGeneration, volume.delta.layers().first!.objectCount)
                largestItemBytes = max(largestItemBytes, volume.delta.layers().first!.commitLoad.itemBytes)
                largestOperation = max(largestOperation, CommitLoad.of(changes, born: 0..<0).itemBytes)
            }
            try script.makeRoot()
            let first = volume.current.generation
            for _ in 0..<300 { try script.step() }
            XCTAssertGreaterThan(volume.current.generation, first + 3, "\(limits): no commit started by itself")
            // A frame (RAM pieces up to 6,000 bytes) may pass the budget; the next commit follows it.
            XCTAssertLessThan(largestJournal, UInt64(limits.journalBytes) + 64 << 10, "\(limits)")
            XCTAssertLessThan(largestGeneration, limits.dirtyObjects + 8, "\(limits)")
            // An operation may pass the cap of item bytes; its commit follows it.
            XCTAssertLessThan(largestItemBytes, limits.itemBytes + largestOperation, "\(limits)")
            try volume.sync()
            var rng = SplitMix64(seed: 1)
            let reopened = try TreeVolume.open(CrashSimulatingStorage(maximumBytes: 8 << 20, initial: disk.crashImage(using: &rng, keep: 0, torn: 0)))
            XCTAssertNil(try TreeVolumeCrashTests.mismatch(reopened, script.model), "\(limits)")
        }
    }
}
