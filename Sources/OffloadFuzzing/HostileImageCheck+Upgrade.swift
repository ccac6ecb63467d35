import OffloadCore
import OffloadNamespace
import OffloadSimulation

/// What must hold when a format 1 image is upgraded to format 2, as the first read-write
/// mount of this release does (`MountedImages.upgrade`): the upgrade (`TreeVolume.upgrade`,
/// on format 1's recovery read as it is) refuses with a clear error, or leaves an image
/// that checks clean, mounts, is walked, changed and unmounted, and checks clean again.
/// Run on the image as it is when it needs nothing replayed (the upgrade without format
/// 1's mount), and on the image format 1's mount and unmount left (the other way).
extension HostileImageCheck {
    static func checkUpgrade(_ image: MemoryImageStorage, after what: String) throws(Violation) {
        let storage = copy(image)
        let volume: TreeVolume
        var stated: UInt64 = 0
        do {
            guard case .image(let superblock, _) = try ImageIdentity.read(storage) else { return }
            stated = superblock.capacityBytes
            let read = { (offset: UInt64, count: Int) in storage.readBytes(at: offset, count: count) }
            let replay = try ImageReplay.load(superblock: superblock, fileBytes: storage.length, read: read)
            let analysis = ImageAnalysis(replay, fileBytes: storage.length)
            // What the mount upgrades without format 1's mount; anything else it mounts first.
            guard analysis.isClean, replay.journalFrames == 0 else { return }
            volume = try TreeVolume.upgrade(storage, from: replay, analysis: analysis,
                                            previousSegments: ImageReplay.previousCommitSegments(
                                                of: superblock, fileBytes: storage.length, read: read),
                                            nameHashKey: SipHash24(key0: 0x5eed, key1: 0xfeed))
        } catch .noSpace where stated > UInt64(storage.maximumBytes) {
            // The image is extended to the capacity format 1's superblock states, more than
            // the harness's copy holds (a disk would hold it: the extension is sparse).
            return
        } catch {
            return try requireClear(error, "the upgrade after \(what)")
        }
        do {
            try volume.close()
            let check = try VolumeCheck.run(storage)
            guard check.isClean else {
                throw Violation(description: "after \(what), the upgraded image has \(check.problemCount) problems: \(check.problems.prefix(3))")
            }
            try mountAndUse(storage, checkedClean: true, after: "the upgrade after \(what)")
        } catch let violation as Violation {
            throw violation
        } catch {
            throw Violation(description: "after \(what), the upgraded image: \(error)")
        }
    }
}
