import XCTest
@testable import OffloadCore

/// The seed's own test (`test_offload_file` in offloaded_file.rs), ported: the image
/// starts with 100 bytes of 12s that the second write shares without copying.
final class SeedScenarioTests: XCTestCase {
    func testSeedScenario() throws {
        let image = TemporaryImage()
        let store = try image.makeStore()
        let limiter = MemoryLimiter(limitBytes: 1 << 20)
        let file = OffloadedFile(store: store, limiter: limiter)

        let preloaded = try store.allocate(byteCount: 100)
        let twelves = [UInt8](repeating: 12, count: 100)
        try store.copyIn(twelves, to: preloaded.lowerBound)

        try file.write(at: 0, bytes: [UInt8](repeating: 56, count: 100))
        XCTAssertEqual(file.size, 100)
        XCTAssertEqual(try file.contents(), [UInt8](repeating: 56, count: 100))

        try file.write(at: 50, imageRange: preloaded.lowerBound..<preloaded.lowerBound + 100)
        XCTAssertEqual(file.size, 150)
        XCTAssertEqual(try file.contents(), [UInt8](repeating: 56, count: 50) + twelves)

        try file.resize(to: 200, fill: 99)
        XCTAssertEqual(file.size, 200)
        XCTAssertEqual(try file.contents(),
                       [UInt8](repeating: 56, count: 50) + twelves + [UInt8](repeating: 99, count: 50))

        try file.resize(to: 33, fill: 1)
        XCTAssertEqual(try file.contents(), [UInt8](repeating: 56, count: 33))

        try file.write(at: 10, bytes: [UInt8](repeating: 74, count: 10))
        XCTAssertEqual(file.size, 33)
        XCTAssertEqual(try file.contents(),
                       [UInt8](repeating: 56, count: 10) + [UInt8](repeating: 74, count: 10)
                       + [UInt8](repeating: 56, count: 13))
        try file.checkInvariants()

        // The seed's bugs, checked the other way round.
        try file.write(at: 1000, bytes: [])
        XCTAssertEqual(file.size, 33, "a zero-length write past EOF must not extend the file")
        try file.write(at: 40, bytes: [7])
        XCTAssertEqual(file.size, 41, "a write past EOF lands at its offset, leaving a hole")
        XCTAssertEqual(try file.read(at: 33, count: 8), [0, 0, 0, 0, 0, 0, 0, 7])

        store.release(preloaded)
        file.releaseAll()
        XCTAssertEqual(store.statistics.liveBytes, 0)
        XCTAssertEqual(limiter.usedBytes, 0)
        try store.checkInvariants()
    }
}
