import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// `OverlayImageStorage` against a plain model (an array of the bytes and a length): random
/// writes, punches, zero ranges, reservations and length changes over a base image, read
/// back whole after each (`mayHoldData` true wherever a byte is not zero), and the base
/// never changed.
final class OverlayImageStorageTests: XCTestCase {
    static let page = 4096

    func testRandomChangesReadAsTheModelAndLeaveTheBaseAsItWas() throws {
        for seed in UInt64(1)...6 {
            var rng = SplitMix64(seed: seed)
            let baseLength = Int(rng.next() % 12) * Self.page + Int(rng.next() % UInt64(Self.page))
            let original = (0..<baseLength).map { _ in UInt8(truncatingIfNeeded: rng.next() | 1) }
            let base = MemoryImageStorage(maximumBytes: 64 * Self.page, initial: original)
            let overlay = OverlayImageStorage(over: base)
            var model = original
            for step in 0..<300 {
                let what = rng.next() % 6
                switch what {
                case 0, 1:
                    guard !model.isEmpty else { continue }
                    let offset = Int(rng.next() % UInt64(model.count))
                    let count = Int(rng.next() % UInt64(min(3 * Self.page, model.count - offset))) + 1
                    let bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                    try bytes.withUnsafeBytes { b in try overlay.write(b, at: UInt64(offset)) }
                    model.replaceSubrange(offset..<offset + count, with: bytes)
                case 2, 3:
                    let first = Int(rng.next() % 20), pages = Int(rng.next() % 4) + 1
                    let range = UInt64(first * Self.page)..<UInt64((first + pages) * Self.page)
                    if what == 2 {
                        try overlay.punch(range)
                    } else {
                        try overlay.zero(range)
                        if model.count < Int(range.upperBound) { model += [UInt8](repeating: 0, count: Int(range.upperBound) - model.count) }
                    }
                    for i in Int(range.lowerBound)..<max(Int(range.lowerBound), min(Int(range.upperBound), model.count)) { model[i] = 0 }
                case 4:
                    let end = Int(rng.next() % 24 + 1) * Self.page
                    try overlay.reserve(UInt64(end - Self.page)..<UInt64(end))
                    if model.count < end { model += [UInt8](repeating: 0, count: end - model.count) }
                default:
                    let length = Int(rng.next() % UInt64(24 * Self.page))
                    try overlay.setLength(UInt64(length))
                    if length < model.count { model.removeLast(model.count - length) } else {
                        model += [UInt8](repeating: 0, count: length - model.count)
                    }
                }
                XCTAssertEqual(overlay.length, UInt64(model.count), "seed \(seed), step \(step)")
                var read = [UInt8](repeating: 0xee, count: model.count + 100)
                let n = try read.withUnsafeMutableBytes { b in try overlay.read(into: b, at: 0) }
                XCTAssertEqual(n, model.count, "seed \(seed), step \(step)")
                guard Array(read.prefix(n)) == model else {
                    let first = model.indices.first { read[$0] != model[$0] } ?? -1
                    XCTFail("seed \(seed), step \(step) (\(what)): the bytes differ first at \(first)")
                    return
                }
                // `mayHoldData` is false only where every byte reads as zero (a replay's scrub of
                // the free space punches what it says may hold bytes).
                for page in 0..<(model.count + Self.page - 1) / Self.page {
                    let range = UInt64(page * Self.page)..<UInt64(page * Self.page + Self.page)
                    if model[page * Self.page..<min(model.count, (page + 1) * Self.page)].contains(where: { $0 != 0 }) {
                        XCTAssertTrue(overlay.mayHoldData(range), "seed \(seed), step \(step): page \(page) holds bytes")
                    }
                }
                // A read that starts inside a page and crosses several.
                if model.count > 5000 {
                    var part = [UInt8](repeating: 0, count: 5000)
                    _ = try part.withUnsafeMutableBytes { b in try overlay.read(into: b, at: 7) }
                    XCTAssertEqual(Array(part.prefix(model.count - 7)), Array(model[7..<min(5007, model.count)]))
                }
            }
            XCTAssertEqual(base.bytes, original, "seed \(seed): the base was written")
            XCTAssertThrowsError(try overlay.map(byteCount: Self.page))
        }
    }
}
