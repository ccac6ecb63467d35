/// Why a mount could not be made or served: one line for the user, no stack trace.
public struct MountError: Error, CustomStringConvertible, Equatable, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
