import XCTest
@testable import OffloadCore
import SplitMix

/// `ExtentCut` against the plain rule it replaces: the kept slices take a reference on
/// every block they touch, the whole extent drops one on every block it touches.
final class ExtentCutTests: XCTestCase {
    func testNetReferencesMatchRetainingTheKeptSlicesAndReleasingTheWhole() {
        let block = UInt64(BackingStore.blockSize)
        var rng = SplitMix64(seed: 11)
        for _ in 0..<5_000 {
            let start = rng.next() % (8 * block)
            let length = 1 + rng.next() % (6 * block)
            let image = start..<start + length
            let a = rng.next() % length, b = 1 + rng.next() % length
            let dropped = min(a, b - 1)..<max(a + 1, b)
            guard dropped.upperBound <= length else { continue }
            var model = [Int](repeating: 0, count: 16)
            func add(_ range: Range<UInt64>, _ delta: Int) {
                guard !range.isEmpty else { return }
                for block in BackingStore.blocks(touchedBy: range) { model[Int(block)] += delta }
            }
            add(image.lowerBound..<image.lowerBound + dropped.lowerBound, 1)
            add(image.lowerBound + dropped.upperBound..<image.upperBound, 1)
            add(image, -1)
            var net = [Int](repeating: 0, count: 16)
            let cut = ExtentCut(image: image, dropped: dropped)
            if let twice = cut.heldTwice { for block in BackingStore.blocks(touchedBy: twice) { net[Int(block)] += 1 } }
            if let released = cut.released { for block in BackingStore.blocks(touchedBy: released) { net[Int(block)] -= 1 } }
            XCTAssertEqual(net, model, "image \(image) dropped \(dropped)")
            if net != model { return }
        }
    }
}
