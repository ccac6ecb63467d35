import Dispatch
import XCTest
@testable import OffloadCore

/// A lock taken from a serial dispatch queue and from `concurrentPerform` at once, the way
/// the maintenance timer and request threads take the store's reclaim lock. In a normal
/// run the count checks mutual exclusion; under ThreadSanitizer (scripts/tsan) it is the
/// case that reported `PthreadMutex<Void>` (see `PthreadLock`) and must report nothing.
final class LockTests: XCTestCase {
    final class Counter: @unchecked Sendable {
        // Guarded by the lock under test.
        var value = 0
    }

    func testALockGuardingNoValueExcludesAndIsSeenByThreadSanitizer() {
        let lock = PthreadLock()
        let counter = Counter()
        let queue = DispatchQueue(label: "offloadfs.test.lock")
        let group = DispatchGroup()
        for _ in 0..<500 {
            queue.async(group: group) { lock.withLock { counter.value += 1 } }
        }
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<500 { lock.withLock { counter.value += 1 } }
        }
        group.wait()
        XCTAssertEqual(lock.withLock { counter.value }, 2500)
    }
}
