import ArgumentParser
import FuseBridge
import Logging
#if canImport(Glibc)
import Glibc
#endif

extension ByteSize: ExpressibleByArgument {
    public init?(argument: String) {
        guard let size = try? ByteSize(parsing: argument) else { return nil }
        self = size
    }
    public var defaultValueDescription: String { description }
}

extension Logger.Level: @retroactive ExpressibleByArgument {
    public static var allValueStrings: [String] { allCases.map(\.rawValue) }
}

/// Prints `offloadfs: MESSAGE` as one line on stderr: the only way the CLI reports an
/// error it does not leave to the argument parser. Run as a mount(8) helper, the options
/// it names are spelled as `-o` options (`MountHelperArguments.respelled`).
func printError(_ message: String) {
    let spelled = MountHelperArguments.spellsMountOptions ? MountHelperArguments.respelled(message) : message
    writeLine("offloadfs: \(spelled.replacingNewlines())", to: STDERR_FILENO)
}

/// Prints `offloadfs: warning: MESSAGE` as one line on stderr: something the user should
/// know about a command that goes ahead anyway.
func printWarning(_ message: String) {
    printError("warning: \(message)")
}

/// Writes `line` and a newline to `descriptor`, retrying short writes and EINTR; gives up
/// quietly on any other error (there is nowhere left to report it).
func writeLine(_ line: String, to descriptor: Int32) {
    let bytes = Array((line + "\n").utf8)
    var written = 0
    while written < bytes.count {
        let count = bytes[written...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { return }
        written += count
    }
}
