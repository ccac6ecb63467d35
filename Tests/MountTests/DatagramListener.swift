import Foundation
import XCTest

/// A unix datagram socket the test owns, standing in for systemd's notify socket or
/// /dev/log: every datagram that arrives is kept with its arrival time.
///
/// `name` is a filesystem path, or "@name" for the abstract namespace (as $NOTIFY_SOCKET
/// writes it). A thread receives until `close()`.
final class DatagramListener: @unchecked Sendable {
    struct Message {
        var text: String
        var arrived: Date
    }

    let name: String
    private let fd: Int32
    private let lock = NSLock()
    private var received: [Message] = []
    private var thread: Thread?
    private var closed = false

    init(name: String) throws {
        self.name = name
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw MountTestError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(name.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count + (abstract ? 0 : 1))
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard status == 0 else {
            let reason = String(cString: strerror(errno))
            Glibc.close(fd)
            throw MountTestError("bind \(name): \(reason)")
        }
        // recv wakes every 100 ms so that close() is noticed.
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let thread = Thread { [unowned self] in self.receiveLoop() }
        self.thread = thread
        thread.start()
    }

    private func receiveLoop() {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !lock.withLock({ closed }) {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { continue }
            let message = Message(text: String(decoding: buffer.prefix(count), as: UTF8.self), arrived: Date())
            lock.withLock { received.append(message) }
        }
    }

    var messages: [Message] { lock.withLock { received } }

    /// The first message (arrived so far, or within `timeout`) for which `matches` holds.
    func wait(timeout: TimeInterval, for matches: (String) -> Bool) -> Message? {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if let found = messages.first(where: { matches($0.text) }) { return found }
            usleep(10_000)
        } while Date() < deadline
        return nil
    }

    /// Every `KEY=VALUE` field of every message, in order.
    var fields: [(field: String, arrived: Date)] {
        messages.flatMap { message in message.text.split(separator: "\n").map { (String($0), message.arrived) } }
    }

    func close() {
        lock.withLock { closed = true }
        while thread?.isFinished == false { usleep(10_000) }
        Glibc.close(fd)
        if !name.hasPrefix("@") { unlink(name) }
    }
}

/// A test case with a fresh (not yet started) `MountFixture` per test and, if the test
/// makes one, a `DatagramListener`; both are cleaned up (a background mount unmounted
/// first) after the test.
class ListeningDaemonTestCase: XCTestCase {
    var fixture: MountFixture!
    var listener: DatagramListener?

    override func setUpWithError() throws {
        try super.setUpWithError()
        fixture = try MountFixture()
    }

    override func tearDown() {
        if let fixture, fixture.daemon == nil, MountTable.isMounted(fixture.mountPoint) {
            _ = try? BoundedRun.offloadfs(["unmount", fixture.mountPoint], timeout: 60)
        }
        listener?.close()
        if let fixture { for problem in fixture.stop() { XCTFail(problem) } }
        fixture = nil
        super.tearDown()
    }
}
