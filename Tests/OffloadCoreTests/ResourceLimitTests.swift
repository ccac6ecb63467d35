import Foundation
import Dispatch
import XCTest
@testable import OffloadCore
import SplitMix

/// Running out of space, huge arguments, and many threads at once: the cases where a
/// filesystem loses data or crashes if it gets them wrong.
final class ResourceLimitTests: XCTestCase {
    // fallocate(2): "subsequent writes into the range ... are guaranteed not to fail because of lack of disk space"
    func testWritesIntoPreallocatedSpaceNeverRunOutOfSpace() throws {
        let image = TemporaryImage()
        let store = try image.makeStore(capacityBytes: 4 * 4096)
        let limiter = MemoryLimiter(limitBytes: 0)
        let a = OffloadedFile(store: store, limiter: limiter)
        let b = OffloadedFile(store: store, limiter: limiter)
        try a.preallocate(0..<4096, keepSize: false)
        try b.write(at: 0, bytes: [UInt8](repeating: 1, count: 4096))
        try a.preallocate(4096..<8192, keepSize: false)
        try b.write(at: 4096, bytes: [UInt8](repeating: 1, count: 4096))
        // Both blocks of `a` are preallocated and its own: rewriting across them needs no space.
        XCTAssertNoThrow(try a.write(at: 4000, bytes: [UInt8](repeating: 2, count: 200)))
    }

    func testCloneBetweenFilesWithDifferentMemoryBudgetsIsRefused() throws {
        let image = TemporaryImage()
        let store = try image.makeStore()
        let big = MemoryLimiter(limitBytes: 1 << 20), none = MemoryLimiter(limitBytes: 0)
        let a = OffloadedFile(store: store, limiter: big)
        let b = OffloadedFile(store: store, limiter: none)
        try a.write(at: 0, bytes: [UInt8](repeating: 1, count: 100))
        XCTAssertThrowsError(try b.cloneRange(from: a, sourceOffset: 0, count: 100, to: 0)) {
            guard case .invalidArgument = $0 as? FSError else { return XCTFail("\($0)") }
        }
        XCTAssertEqual(big.usedBytes, 100 + Extent.memoryPieceOverhead)
        XCTAssertEqual(b.size, 0)
    }

    func testHugeRangesThrowInsteadOfTrapping() throws {
        let image = TemporaryImage()
        let store = try image.makeStore()
        let a = OffloadedFile(store: store, limiter: MemoryLimiter(limitBytes: 0))
        XCTAssertThrowsError(try a.punchHole(0..<UInt64.max))
    }

    /// Random ops on a tiny image: every failed op must leave contents unchanged and
    /// counts consistent.
    func testRandomOpsOnTinyImage() throws {
        for seed in UInt64(1)...100 {
            var rng = SplitMix64(seed: seed)
            let image = TemporaryImage()
            let store = try image.makeStore(capacityBytes: UInt64(4 + seed % 12) * 4096)
            let limiter = MemoryLimiter(limitBytes: [0, 3000, 9000][Int(seed % 3)])
            var files = (0..<3).map { _ in OffloadedFile(store: store, limiter: limiter) }
            var log: [String] = []
            for step in 0..<400 {
                let f = Int(rng.next() % 3), file = files[f]
                let before = try file.contents()
                let size = before.count
                let off = UInt64(rng.next() % UInt64(size + 6000))
                let len = Int(rng.next() % 9000)
                var expectChange = true
                do throws(FSError) {
                    switch rng.next() % 7 {
                    case 0, 1:
                        log.append("\(step) f\(f).write(\(off), \(len))")
                        try file.write(at: off, bytes: randomBytes(len, using: &rng))
                    case 2:
                        log.append("\(step) f\(f).preallocate(\(off)..<\(off + UInt64(len) + 1))")
                        try file.preallocate(off..<off + UInt64(len) + 1, keepSize: rng.next() % 2 == 0)
                    case 3:
                        let s = Int(rng.next() % 3)
                        let so = UInt64(rng.next() % UInt64(files[s].size + 100))
                        log.append("\(step) f\(f).clone(from f\(s) \(so), \(len), to \(off))")
                        try file.cloneRange(from: files[s], sourceOffset: so, count: UInt64(len), to: off)
                    case 4:
                        log.append("\(step) f\(f).punch(\(off), \(len + 1))")
                        try file.punchHole(off..<off + UInt64(len) + 1)
                    case 5:
                        log.append("\(step) f\(f).resize(\(off))")
                        try file.resize(to: off)
                    default:
                        expectChange = false
                        if rng.next() % 10 == 0 { log.append("\(step) f\(f) replaced"); files[f] = OffloadedFile(store: store, limiter: limiter) }
                    }
                } catch .noSpace {
                    let after = try file.contents()
                    if after != before { XCTFail("seed \(seed): failed op changed the file\n" + log.suffix(6).joined(separator: "\n")); return }
                } catch {
                    XCTFail("seed \(seed): \(error)"); return
                }
                if !expectChange { continue }
                do {
                    for x in files { try x.checkInvariants() }
                    try store.checkInvariants()
                    var expected: [UInt64: UInt32] = [:]
                    for x in files { for (_, e) in x.extentList { if case .mmapOffload(let o, let s) = e {
                        for blk in BackingStore.blocks(touchedBy: o..<o + s) { expected[blk, default: 0] += 1 } } } }
                    for (blk, c) in expected where store.referenceCount(atByte: blk << 12) != c {
                        XCTFail("seed \(seed) step \(step): block \(blk) count \(store.referenceCount(atByte: blk << 12)) != \(c)\n" + log.suffix(6).joined(separator: "\n")); return
                    }
                    if store.statistics.liveBytes != UInt64(expected.count) << 12 { XCTFail("seed \(seed) step \(step): live \(store.statistics.liveBytes / 4096) blocks, extents reference \(expected.count)\n" + log.suffix(6).joined(separator: "\n")); return }
                    let ram = files.reduce(0) { $0 + $1.extentList.reduce(0) { $0 + $1.extent.memoryCharge } }
                    if ram != limiter.usedBytes { XCTFail("seed \(seed) step \(step): ram \(ram) != limiter \(limiter.usedBytes)\n" + log.suffix(6).joined(separator: "\n")); return }
                } catch { XCTFail("seed \(seed) step \(step): \(error)\n" + log.suffix(6).joined(separator: "\n")); return }
            }
            files.removeAll()
            XCTAssertEqual(store.statistics.liveBytes, 0)
            XCTAssertEqual(limiter.usedBytes, 0)
        }
    }

    /// Clone snapshots must never see in-place overwrites of the source, before or after.
    func testConcurrentCloneVersusInPlaceOverwrite() throws {
        let image = TemporaryImage()
        let store = try image.makeStore(capacityBytes: 256 << 20)
        let limiter = MemoryLimiter(limitBytes: 0)
        let a = OffloadedFile(store: store, limiter: limiter)
        let size = 64 << 10
        try a.write(at: 0, bytes: [UInt8](repeating: 0, count: size))
        let failures = FailureCollector()
        let clones = (0..<4).map { _ in OffloadedFile(store: store, limiter: limiter) }
        DispatchQueue.concurrentPerform(iterations: 5) { t in
            do {
                if t == 0 {
                    for r in 0..<1000 { try a.write(at: 0, bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: r), count: size)) }
                } else {
                    let b = clones[t - 1]
                    for _ in 0..<200 {
                        try b.cloneRange(from: a, sourceOffset: 0, count: UInt64(size), to: 0)
                        let first = try b.read(at: 0, count: size)
                        if Set(first).count != 1 { failures.add("torn clone") }
                        usleep(10)
                        let again = try b.read(at: 0, count: size)
                        if again != first { failures.add("clone changed after the fact") }
                    }
                }
            } catch { failures.add("\(error)") }
        }
        XCTAssertEqual(Array(failures.messages.prefix(3)), [])
        try store.checkInvariants()
    }
}

/// Six threads churn their own files and clone from each other's on a 2 MiB image that
/// keeps running full; no file may ever show a byte another file wrote.
final class ConcurrentChurnTests: XCTestCase {
    func testNoForeignBytesUnderConcurrentChurn() throws {
        let image = TemporaryImage()
        let store = try image.makeStore(capacityBytes: 2 << 20)
        let limiter = MemoryLimiter(limitBytes: 32 << 10)
        let n = 6
        let own = (0..<n).map { _ in OffloadedFile(store: store, limiter: limiter) }
        let sinks = (0..<n).map { _ in OffloadedFile(store: store, limiter: limiter) }
        let failures = FailureCollector()
        DispatchQueue.concurrentPerform(iterations: n) { t in
            var rng = SplitMix64(seed: UInt64(t) * 77 + 5)
            let tag = UInt8(t + 1), sinkTag = UInt8((t + 1) % n + 1)
            let f = own[t], s = sinks[t]
            for step in 0..<1500 {
                let off = rng.next() % (300 << 10), len = Int(rng.next() % 12_000) + 1
                do throws(FSError) {
                    switch rng.next() % 9 {
                    case 0, 1, 2: try f.write(at: off, bytes: [UInt8](repeating: tag, count: len))
                    case 3: try f.punchHole(off..<off + UInt64(len))
                    case 4: try f.resize(to: off)
                    case 5: try f.preallocate(off..<off + UInt64(len), keepSize: rng.next() % 2 == 0)
                    case 6: try s.cloneRange(from: own[(t + 1) % n], sourceOffset: rng.next() % (300 << 10), count: UInt64(len), to: off)
                    case 7: try s.write(at: off, bytes: [UInt8](repeating: sinkTag, count: len))
                    default: try s.zeroRange(off..<off + UInt64(len), keepSize: rng.next() % 2 == 0)
                    }
                } catch .noSpace {
                    if rng.next() % 4 == 0 { _ = try? f.truncate() } else { _ = try? s.truncate() }
                } catch { failures.add("\(error)") }
                // A slice every step, whole files now and then (scanning bytes is slow in
                // a debug build).
                let whole = step % 64 == 0
                let start = whole ? 0 : rng.next() % (300 << 10)
                let a = (try? f.read(at: start, count: whole ? Int(f.size) : 16 << 10)) ?? []
                if a.contains(where: { $0 != 0 && $0 != tag }) { failures.add("file \(t) shows foreign bytes") }
                let b = (try? s.read(at: start, count: whole ? Int(s.size) : 16 << 10)) ?? []
                if b.contains(where: { $0 != 0 && $0 != sinkTag }) { failures.add("sink \(t) shows foreign bytes") }
            }
        }
        XCTAssertEqual(Array(failures.messages.prefix(5)), [])
        for x in own + sinks { try x.checkInvariants() }
        try store.checkInvariants()
        var expected: [UInt64: UInt32] = [:]
        for x in own + sinks { for (_, e) in x.extentList { if case .mmapOffload(let o, let sz) = e {
            for blk in BackingStore.blocks(touchedBy: o..<o + sz) { expected[blk, default: 0] += 1 } } } }
        for (blk, c) in expected { XCTAssertEqual(store.referenceCount(atByte: blk << 12), c) }
        XCTAssertEqual(store.statistics.liveBytes, UInt64(expected.count) << 12)
        for x in own + sinks { x.releaseAll() }
        XCTAssertEqual(store.statistics.liveBytes, 0)
        XCTAssertEqual(limiter.usedBytes, 0)
    }
}

final class PreallocationContentionTests: XCTestCase {
    func testOversizedPreallocateDoesNotStarveOtherWriters() throws {
        let image = TemporaryImage()
        let store = try image.makeStore(capacityBytes: 64 << 20)
        let limiter = MemoryLimiter(limitBytes: 0)
        let a = OffloadedFile(store: store, limiter: limiter), b = OffloadedFile(store: store, limiter: limiter)
        let spurious = FailureCollector()
        DispatchQueue.concurrentPerform(iterations: 2) { t in
            if t == 0 {
                for _ in 0..<200 { _ = try? a.preallocate(0..<(1 << 30), keepSize: false) }
            } else {
                for i in 0..<20_000 {
                    do throws(FSError) { try b.write(at: UInt64(i % 256) * 4096 + 1, bytes: [UInt8](repeating: 1, count: 4096)) }
                    catch { spurious.add("\(error)") }
                }
            }
        }
        XCTAssertEqual(spurious.messages.count, 0, "b (using < 2 MiB of a 64 MiB image) got ENOSPC")
    }
}
