import Dispatch
import Foundation
import Synchronization
import XCTest
@testable import OffloadCore

/// `ShardedReadWriteLock`: the namespace lock since the changes stopped sharing one
/// `pthread_rwlock_t` word (docs/ARCHITECTURE.md, "Step 7, eighth part"). Under
/// ThreadSanitizer (scripts/tsan) the unguarded counter below is a data race unless the
/// lock orders its exclusive holders' writes with every shared holder's reads.
final class ShardedReadWriteLockTests: XCTestCase {
    final class Shared: @unchecked Sendable {
        let lock = ShardedReadWriteLock()
        /// Written only by exclusive holders, read by shared ones.
        var value = 0
        let sharedInside = Atomic<Int>(0)
        let exclusiveInside = Atomic<Int>(0)
        let violations = Atomic<Int>(0)
    }

    /// Four threads, each taking the lock shared 2,000 times and alone every 40th time:
    /// no shared holder sees an exclusive one inside or the value move under it, no
    /// exclusive holder sees anyone else inside, and every exclusive increment counts.
    func testExclusiveHoldersExcludeSharedHoldersAndEachOther() {
        let shared = Shared()
        let threads = 4, rounds = 2_000, every = 40
        let done = DispatchGroup()
        for _ in 0..<threads {
            done.enter()
            Thread {
                for round in 0..<rounds {
                    if round % every == 0 {
                        shared.lock.withWriteLock { () -> Void in
                            if shared.exclusiveInside.add(1, ordering: .relaxed).newValue != 1
                                || shared.sharedInside.load(ordering: .relaxed) != 0 {
                                shared.violations.add(1, ordering: .relaxed)
                            }
                            shared.value += 1
                            shared.exclusiveInside.subtract(1, ordering: .relaxed)
                        }
                    } else {
                        shared.lock.withReadLock { () -> Void in
                            shared.sharedInside.add(1, ordering: .relaxed)
                            let before = shared.value
                            if shared.exclusiveInside.load(ordering: .relaxed) != 0 { shared.violations.add(1, ordering: .relaxed) }
                            for _ in 0..<20 { _ = shared.exclusiveInside.load(ordering: .relaxed) }
                            if shared.value != before { shared.violations.add(1, ordering: .relaxed) }
                            shared.sharedInside.subtract(1, ordering: .relaxed)
                        }
                    }
                }
                done.leave()
            }.start()
        }
        XCTAssertEqual(done.wait(timeout: .now() + 60), .success, "the threads did not finish (a lost wake-up?)")
        XCTAssertEqual(shared.violations.load(ordering: .relaxed), 0)
        XCTAssertEqual(shared.lock.withReadLock { shared.value }, threads * rounds / every)
    }

    /// A shared holder in flight: an exclusive taker waits for it, and a shared taker that
    /// comes after the exclusive one waits behind it (writers are preferred); once the
    /// first holder lets go, the exclusive holder runs, then the shared one. Two shared
    /// holders do not wait for each other.
    func testAnExclusiveTakerWaitsForSharedHoldersAndHoldsBackNewOnes() {
        let lock = ShardedReadWriteLock()
        final class Order: @unchecked Sendable {
            let lock = PthreadLock()
            var steps: [String] = []
            func add(_ step: String) { lock.withLock { steps.append(step) } }
        }
        let order = Order()
        let hold = lock.lockShared()
        let otherShared = DispatchSemaphore(value: 0)
        Thread { lock.withReadLock { () -> Void in otherShared.signal() } }.start()
        XCTAssertEqual(otherShared.wait(timeout: .now() + 10), .success, "a shared taker waited for a shared holder")

        let exclusiveDone = DispatchSemaphore(value: 0), laterDone = DispatchSemaphore(value: 0)
        Thread {
            lock.withWriteLock { () -> Void in order.add("exclusive") }
            exclusiveDone.signal()
        }.start()
        let deadline = Date().addingTimeInterval(10)
        while !lock.isHeldExclusively && Date() < deadline { usleep(100) }
        XCTAssertTrue(lock.isHeldExclusively, "the exclusive taker never came")
        Thread {
            lock.withReadLock { () -> Void in order.add("shared after") }
            laterDone.signal()
        }.start()
        XCTAssertEqual(exclusiveDone.wait(timeout: .now() + 0.2), .timedOut, "the exclusive taker did not wait for the shared holder")
        XCTAssertEqual(laterDone.wait(timeout: .now() + 0.2), .timedOut, "a shared taker passed a waiting exclusive one")
        lock.unlockShared(hold)
        XCTAssertEqual(exclusiveDone.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(laterDone.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(order.lock.withLock { order.steps }, ["exclusive", "shared after"])
        XCTAssertFalse(lock.isHeldExclusively)
    }
}
