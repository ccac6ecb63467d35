import Foundation
import XCTest
@testable import OffloadCore
import SplitMix

/// fsx-style model checking: random operations on a few `OffloadedFile`s sharing one
/// image, each result compared with a plain byte array.
///
/// Replay one seed with `OFFLOADFS_MODEL_SEED=N swift test --filter OffloadedFileModelTests`;
/// `OFFLOADFS_MODEL_SEEDS` and `OFFLOADFS_MODEL_OPS` change how much runs.
final class OffloadedFileModelTests: XCTestCase {
    static let maximumModelSize = 192 * 1024

    func testRandomOperationsMatchByteArrayModel() throws {
        let run = ModelRun(prefix: "OFFLOADFS_MODEL", defaultSeeds: 84, defaultOperations: 2_500)
        let seeds = run.seeds, operations = run.operations
        var total = 0
        for seed in seeds {
            do {
                total += try runModel(seed: seed, operations: operations)
            } catch {
                print("seed \(seed) failed: \(error)")
                XCTFail("seed \(seed) failed: \(error) — replay with OFFLOADFS_MODEL_SEED=\(seed)")
                return
            }
        }
        print("model test: \(total) operations over \(seeds.count) seeds")
        if !run.customized { XCTAssertGreaterThanOrEqual(total, 200_000, "the normal run must cover 200,000 operations") }
    }

    struct ModelFailure: Error, CustomStringConvertible {
        var description: String
    }

    /// Runs one seed; returns the number of operations done.
    func runModel(seed: UInt64, operations: Int) throws -> Int {
        var rng = SplitMix64(seed: seed)
        let image = TemporaryImage()
        let store = try image.makeStore(capacityBytes: 64 << 20)
        let budgets = [0, 6_000, 64 << 10, 1 << 20]
        let limiter = MemoryLimiter(limitBytes: budgets[Int(seed % UInt64(budgets.count))])
        // Odd seeds journal every change the way the namespace does: an observer replays
        // it into a `ReplayedFile`, which must then hold the same bytes as the file (the
        // ranges a change reports cover everything it changed), and freed storage is
        // released only after the observer ran.
        let journaled = seed % 2 == 1
        var observers: [ReplayingObserver?] = []
        func makeFile() -> OffloadedFile {
            let file = OffloadedFile(store: store, limiter: limiter)
            if journaled {
                let observer = ReplayingObserver()
                file.attach(observer)
                observers.append(observer)
            } else {
                observers.append(nil)
            }
            return file
        }
        var files = (0..<3).map { _ in makeFile() }
        observers = Array(observers.suffix(3))
        var models: [[UInt8]] = [[], [], []]
        var log: [String] = []

        func fail(_ what: String) -> ModelFailure {
            ModelFailure(description: "\(what)\nlast operations:\n" + log.suffix(12).joined(separator: "\n"))
        }
        func randomOffset(_ size: Int) -> Int {
            switch rng.next() % 8 {
            case 0: return 0
            case 1: return size
            case 2: return Int(rng.next() % UInt64(size + 1))
            case 3: return Int(rng.next() % UInt64(size + 8192))      // past EOF: leaves a hole
            case 4: return (Int(rng.next() % UInt64(size / 4096 + 2))) * 4096  // block aligned
            default: return size > 0 ? Int(rng.next() % UInt64(size)) : 0
            }
        }
        func randomLength() -> Int {
            switch rng.next() % 6 {
            case 0: return Int(rng.next() % 16)
            case 1: return 4096
            case 2: return Int(rng.next() % 4096)
            case 3: return Int(rng.next() % 20_000)
            default: return Int(rng.next() % 9000)
            }
        }

        for step in 0..<operations {
            let f = Int(rng.next() % 3)
            let file = files[f]
            let size = models[f].count
            let kind = rng.next() % 100
            switch kind {
            case 0..<34:  // write bytes
                let offset = randomOffset(size)
                let length = min(randomLength(), max(0, Self.maximumModelSize - offset))
                let data = randomBytes(length, using: &rng)
                log.append("\(step): file\(f).write(at: \(offset), \(length) bytes)")
                let written = try file.write(at: UInt64(offset), bytes: data)
                guard written == length else { throw fail("write returned \(written), not \(length)") }
                if length > 0 {
                    if offset > models[f].count { models[f] += [UInt8](repeating: 0, count: offset - models[f].count) }
                    let end = offset + length
                    if end > models[f].count { models[f] += [UInt8](repeating: 0, count: end - models[f].count) }
                    models[f].replaceSubrange(offset..<end, with: data)
                }
            case 34..<40:  // zero-copy write of an image range the test fills itself
                let offset = randomOffset(size)
                let length = min(1 + Int(rng.next() % 12_000), max(1, Self.maximumModelSize - offset))
                let granted = try store.allocate(byteCount: length)
                let data = randomBytes(min(length, granted.count), using: &rng)
                try store.copyIn(data, to: granted.lowerBound)
                let skew = UInt64(rng.next() % 2 == 0 ? 0 : min(7, data.count - 1))
                let range = granted.lowerBound + skew..<granted.lowerBound + UInt64(data.count)
                log.append("\(step): file\(f).write(at: \(offset), imageRange: \(range))")
                try file.write(at: UInt64(offset), imageRange: range)
                store.release(granted.lowerBound..<granted.lowerBound + UInt64(data.count))
                let slice = Array(data[Int(skew)...])
                if offset > models[f].count { models[f] += [UInt8](repeating: 0, count: offset - models[f].count) }
                let end = offset + slice.count
                if end > models[f].count { models[f] += [UInt8](repeating: 0, count: end - models[f].count) }
                models[f].replaceSubrange(offset..<end, with: slice)
            case 40..<58:  // read
                let offset = randomOffset(size)
                let length = randomLength()
                log.append("\(step): file\(f).read(at: \(offset), count: \(length))")
                let got = try file.read(at: UInt64(offset), count: length)
                let expected = offset < size ? Array(models[f][offset..<min(size, offset + length)]) : []
                guard got == expected else {
                    throw fail("read(at: \(offset), count: \(length)) differs from the model (got \(got.count) bytes, expected \(expected.count))")
                }
            case 58..<64:  // resize with a fill byte
                let newSize = Int(rng.next() % UInt64(Self.maximumModelSize))
                let fill = UInt8(truncatingIfNeeded: rng.next() % 3 == 0 ? 0 : rng.next())
                log.append("\(step): file\(f).resize(to: \(newSize), fill: \(fill))")
                try file.resize(to: UInt64(newSize), fill: fill)
                if newSize < size { models[f].removeSubrange(newSize...) } else {
                    models[f] += [UInt8](repeating: fill, count: newSize - size)
                }
            case 64..<66:  // truncate
                log.append("\(step): file\(f).truncate()")
                try file.truncate()
                models[f] = []
            case 66..<74:  // punch a hole
                let offset = randomOffset(size)
                let length = randomLength()
                log.append("\(step): file\(f).punchHole(\(offset)..<\(offset + length))")
                try file.punchHole(UInt64(offset)..<UInt64(offset + length))
                for i in offset..<max(offset, min(offset + length, size)) { models[f][i] = 0 }
            case 74..<80:  // zero a range, maybe growing the file
                let offset = randomOffset(size)
                let length = min(randomLength(), max(0, Self.maximumModelSize - offset))
                let keepSize = rng.next() % 2 == 0
                log.append("\(step): file\(f).zeroRange(\(offset)..<\(offset + length), keepSize: \(keepSize))")
                try file.zeroRange(UInt64(offset)..<UInt64(offset + length), keepSize: keepSize)
                let end = keepSize ? min(offset + length, size) : offset + length
                if length > 0 && end > models[f].count { models[f] += [UInt8](repeating: 0, count: end - models[f].count) }
                for i in offset..<max(offset, end) { models[f][i] = 0 }
            case 80..<83:  // preallocate
                let offset = randomOffset(size)
                let length = min(randomLength(), max(0, Self.maximumModelSize - offset))
                let keepSize = rng.next() % 2 == 0
                log.append("\(step): file\(f).preallocate(\(offset)..<\(offset + length), keepSize: \(keepSize))")
                try file.preallocate(UInt64(offset)..<UInt64(offset + length), keepSize: keepSize)
                if !keepSize && length > 0 && offset + length > models[f].count {
                    models[f] += [UInt8](repeating: 0, count: offset + length - models[f].count)
                }
            case 83..<93:  // clone from another (or the same) file
                let s = Int(rng.next() % 3)
                let sourceSize = models[s].count
                let sourceOffset = randomOffset(sourceSize)
                let offset = randomOffset(size)
                let count = min(randomLength() * (rng.next() % 4 == 0 ? 8 : 1), max(0, Self.maximumModelSize - offset))
                log.append("\(step): file\(f).cloneRange(from: file\(s), sourceOffset: \(sourceOffset), count: \(count), to: \(offset))")
                let cloned = try file.cloneRange(from: files[s], sourceOffset: UInt64(sourceOffset),
                                                 count: UInt64(count), to: UInt64(offset))
                let expectedCount = sourceOffset < sourceSize ? min(count, sourceSize - sourceOffset) : 0
                guard cloned == UInt64(expectedCount) else { throw fail("cloned \(cloned), expected \(expectedCount)") }
                if expectedCount > 0 {
                    let bytes = Array(models[s][sourceOffset..<sourceOffset + expectedCount])
                    if offset > models[f].count { models[f] += [UInt8](repeating: 0, count: offset - models[f].count) }
                    let end = offset + expectedCount
                    if end > models[f].count { models[f] += [UInt8](repeating: 0, count: end - models[f].count) }
                    models[f].replaceSubrange(offset..<end, with: bytes)
                }
            case 93..<97:  // SEEK_DATA / SEEK_HOLE agree with the bytes
                let offset = randomOffset(size)
                log.append("\(step): file\(f).nextData/nextHole(from: \(offset))")
                try checkSeek(file, model: models[f], from: offset, fail: fail)
            case 97..<98:  // drop a file entirely and start it again
                log.append("\(step): file\(f) replaced by a new file")
                files[f] = makeFile()
                observers[f] = observers.removeLast()
                models[f] = []
            default:  // sizes and invariants
                log.append("\(step): check invariants")
                for (i, candidate) in files.enumerated() {
                    try candidate.checkInvariants()
                    guard candidate.size == UInt64(models[i].count) else { throw fail("file\(i) size \(candidate.size) != \(models[i].count)") }
                    guard candidate.allocatedByteCount <= candidate.size else { throw fail("file\(i) stores more than its size") }
                }
                try checkReferenceCounts(store: store, files: files, fail: fail)
                // Rebuilding the bytes costs a whole-file read: every 8th check suffices.
                for (i, observer) in observers.enumerated() where step % 8 == 0 {
                    guard let observer else { continue }
                    guard observer.contents(store) == models[i] else {
                        throw fail("file\(i): the replayed changes do not give the file's bytes")
                    }
                }
            }
            guard files[f].size == UInt64(models[f].count) else {
                throw fail("size \(files[f].size) differs from the model's \(models[f].count)")
            }
        }
        for (i, file) in files.enumerated() {
            guard try file.contents() == models[i] else { throw fail("file\(i)'s final contents differ") }
            if let observer = observers[i], observer.contents(store) != models[i] {
                throw fail("file\(i): the replayed changes do not give the final bytes")
            }
            try file.checkInvariants()
        }
        try checkReferenceCounts(store: store, files: files, fail: fail)
        try store.checkInvariants()
        files.removeAll()  // deinit frees everything
        guard store.statistics.liveBytes == 0 else { throw fail("\(store.statistics.liveBytes) bytes still live after all files went") }
        guard limiter.usedBytes == 0 else { throw fail("\(limiter.usedBytes) RAM bytes still reserved after all files went") }
        try store.checkInvariants()
        return operations
    }

    /// SEEK_DATA and SEEK_HOLE answers must be consistent with the bytes: everything
    /// between the offset and the next data reads as zeros.
    func checkSeek(_ file: OffloadedFile, model: [UInt8], from offset: Int,
                   fail: (String) -> ModelFailure) throws {
        let size = model.count
        let data = Result { () throws(FSError) in try file.nextData(from: UInt64(offset)) }
        let holeResult = Result { () throws(FSError) in try file.nextHole(from: UInt64(offset)) }
        if offset >= size {
            guard case .failure(.noSuchOffset) = data, case .failure(.noSuchOffset) = holeResult else {
                throw fail("SEEK_DATA/SEEK_HOLE at \(offset) past EOF \(size) did not fail with ENXIO")
            }
            return
        }
        guard case .success(let holeOffset) = holeResult else { throw fail("nextHole(\(offset)) failed") }
        let hole = Int(holeOffset)
        guard hole >= offset, hole <= size else { throw fail("nextHole(\(offset)) = \(hole) out of range") }
        let dataEnd: Int
        switch data {
        case .success(let d): dataEnd = Int(d)
        case .failure(.noSuchOffset): dataEnd = size
        case .failure(let e): throw fail("nextData(\(offset)) failed: \(e)")
        }
        guard dataEnd >= offset, dataEnd <= size else { throw fail("nextData(\(offset)) = \(dataEnd) out of range") }
        guard model[offset..<dataEnd].allSatisfy({ $0 == 0 }) else {
            throw fail("nextData(\(offset)) = \(dataEnd) skips non-zero bytes")
        }
        guard hole == offset || dataEnd == offset else { throw fail("offset \(offset) is neither hole nor data") }
    }

    /// Recomputes every block's reference count from the files' extents and compares it
    /// with the store's: one reference per extent per block it touches.
    func checkReferenceCounts(store: BackingStore, files: [OffloadedFile],
                              fail: (String) -> ModelFailure) throws {
        var expected: [UInt64: UInt32] = [:]
        for file in files {
            for (_, extent) in file.extentList {
                if case .mmapOffload(let offset, let size) = extent {
                    for block in BackingStore.blocks(touchedBy: offset..<offset + size) { expected[block, default: 0] += 1 }
                }
            }
        }
        for (block, count) in expected {
            let actual = store.referenceCount(atByte: block << 12)
            guard actual == count else { throw fail("block \(block) has \(actual) references, extents hold \(count)") }
        }
        guard store.statistics.liveBytes == UInt64(expected.count) << 12 else {
            throw fail("store has \(store.statistics.liveBytes / 4096) live blocks, extents reference \(expected.count)")
        }
    }
}

/// Replays a file's reported changes like recovery does, to check they are complete.
final class ReplayingObserver: FileChangeObserver, @unchecked Sendable {
    // Only touched under the observed file's write lock, or by the test between
    // operations.
    let replayed = ReplayedFile()

    func fileChanged(_ change: FileChange) {
        replayed.apply(size: change.size, range: change.range, pieces: change.pieces)
    }

    /// The bytes the replayed pieces describe, image pieces read from the store.
    func contents(_ store: BackingStore) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(replayed.size))
        for piece in replayed.pieceList {
            let at = Int(piece.offset)
            switch piece.extent {
            case .mmapOffload(let offset, let size):
                bytes.replaceSubrange(at..<at + Int(size), with: store.bytes(at: offset, count: Int(size)))
            case .repeatingBytes(let value, let count):
                bytes.replaceSubrange(at..<at + Int(count), with: repeatElement(value, count: Int(count)))
            case .inMemory(let memory):
                bytes.replaceSubrange(at..<at + memory.count, with: memory)
            }
        }
        return bytes
    }
}
