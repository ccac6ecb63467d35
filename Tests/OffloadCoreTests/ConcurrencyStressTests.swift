import Foundation
import Dispatch
import XCTest
@testable import OffloadCore
import SplitMix
import Synchronization

/// Many threads on many files and several threads on one file, with the Swift 6 checker
/// on at compile time; at run time every byte must come out as the last writer of its
/// stripe left it.
final class ConcurrencyStressTests: XCTestCase {
    func testThreadsOnDifferentFilesAndOnOneFile() throws {
        let image = TemporaryImage()
        let store = try image.makeStore(capacityBytes: 512 << 20)
        let limiter = MemoryLimiter(limitBytes: 256 << 10)
        let files = (0..<8).map { _ in OffloadedFile(store: store, limiter: limiter) }
        let shared = OffloadedFile(store: store, limiter: limiter)
        let threads = 8
        let rounds = 300
        let stripe = 5000  // not block aligned: threads share blocks of the shared file
        let failures = FailureCollector()

        DispatchQueue.concurrentPerform(iterations: threads) { t in
            var rng = SplitMix64(seed: UInt64(t) + 1)
            let own = files[t]
            for round in 0..<rounds {
                let value = UInt8(truncatingIfNeeded: round &* 31 &+ t)
                do {
                    // Own file: random writes, clones from a neighbour, punches, reads.
                    let offset = UInt64(rng.next() % (1 << 20))
                    try own.write(at: offset, bytes: [UInt8](repeating: value, count: Int(rng.next() % 9000) + 1))
                    try own.cloneRange(from: files[(t + 1) % threads], sourceOffset: UInt64(rng.next() % (1 << 20)),
                                       count: rng.next() % 20_000, to: UInt64(rng.next() % (1 << 20)))
                    if round % 7 == 0 { try own.punchHole(offset..<offset + 8192) }
                    _ = try own.read(at: UInt64(rng.next() % (1 << 20)), count: 16_384)
                    // Shared file: each thread owns one stripe and checks it stays its own.
                    let base = UInt64(t * stripe)
                    try shared.write(at: base, bytes: [UInt8](repeating: value, count: stripe))
                    let back = try shared.read(at: base, count: stripe)
                    if back != [UInt8](repeating: value, count: stripe) {
                        failures.add("thread \(t) round \(round): its stripe of the shared file changed under it")
                    }
                } catch {
                    failures.add("thread \(t) round \(round): \(error)")
                }
            }
        }
        XCTAssertEqual(failures.messages, [])
        for file in files + [shared] { try file.checkInvariants() }
        try store.checkInvariants()
        for file in files + [shared] { file.releaseAll() }
        XCTAssertEqual(store.statistics.liveBytes, 0)
        XCTAssertEqual(limiter.usedBytes, 0)
    }
}

/// Collects failure messages from many threads.
final class FailureCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func add(_ message: String) { lock.lock(); list.append(message); lock.unlock() }
    var messages: [String] { lock.lock(); defer { lock.unlock() }; return list }
}

/// Readers that keep one file's lock busy must not starve a writer: with glibc's default
/// (reader-preferring) rwlock, overlapping reads let new readers in while a writer waits,
/// for as long as they keep coming.
final class WriterStarvationTests: XCTestCase {
    func testAWriterGetsInWhileReadersKeepReading() throws {
        let image = TemporaryImage()
        let store = try image.makeStore(capacityBytes: 64 << 20)
        let file = OffloadedFile(store: store, limiter: MemoryLimiter(limitBytes: 0))
        try file.write(at: 0, bytes: [UInt8](repeating: 1, count: 8 << 20))
        let stop = Atomic<Bool>(false)
        let reads = Atomic<Int>(0)
        let readers = DispatchGroup()
        for _ in 0..<4 {
            Thread.detachNewThread {
                readers.enter()
                defer { readers.leave() }
                while !stop.load(ordering: .relaxed) {
                    _ = try? file.read(at: 0, count: 8 << 20)
                    reads.add(1, ordering: .relaxed)
                }
            }
        }
        while reads.load(ordering: .relaxed) < 8 { usleep(1000) }  // all readers are reading
        let writes = 20
        let started = DispatchTime.now()
        for i in 0..<writes {
            try file.write(at: UInt64(i) * 4096, bytes: [UInt8](repeating: 2, count: 4096))
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        stop.store(true, ordering: .relaxed)
        readers.wait()
        print("writer starvation: \(writes) writes among 4 busy readers took \(seconds) s")
        XCTAssertLessThan(seconds, 5, "a writer waited behind readers that kept coming")
        file.releaseAll()
    }
}
