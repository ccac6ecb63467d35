/// A size given on the command line: a decimal number of bytes with an optional binary
/// suffix K, M, G or T (powers of 1024, case-insensitive), optionally followed by "B" or
/// "iB": `4096`, `64M`, `64MiB`, `1.5G` is refused (whole numbers only), `10g` is 10 GiB.
public struct ByteSize: Equatable, Sendable, CustomStringConvertible {
    public var bytes: UInt64

    public init(bytes: UInt64) { self.bytes = bytes }

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case empty
        case notANumber(String)
        case unknownSuffix(String)
        case tooLarge(String)

        public var description: String {
            switch self {
            case .empty: return "a size cannot be empty"
            case .notANumber(let text): return "'\(text)' is not a size (expected e.g. 4096, 64M, 10G)"
            case .unknownSuffix(let text): return "'\(text)' has an unknown unit (use K, M, G or T)"
            case .tooLarge(let text): return "'\(text)' is too large"
            }
        }
    }

    public init(parsing text: String) throws(ParseError) {
        let trimmed = text.trimmingSpaces()
        guard !trimmed.isEmpty else { throw .empty }
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, let number = UInt64(digits) else { throw .notANumber(text) }
        var unit = trimmed.dropFirst(digits.count).uppercased()
        if unit.hasSuffix("IB") {
            unit.removeLast(2)
            guard !unit.isEmpty else { throw .unknownSuffix(text) }
        } else if unit.hasSuffix("B") {
            unit.removeLast()
        }
        let shift: UInt64
        switch unit {
        case "": shift = 0
        case "K": shift = 10
        case "M": shift = 20
        case "G": shift = 30
        case "T": shift = 40
        default: throw .unknownSuffix(text)
        }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: 1 << shift)
        guard !overflow else { throw .tooLarge(text) }
        self.bytes = bytes
    }

    /// The largest unit that divides the size exactly: "64M", "1G", "4097".
    public var description: String {
        for (suffix, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] as [(String, UInt64)] {
            let unit: UInt64 = 1 << shift
            if bytes >= unit && bytes % unit == 0 { return "\(bytes / unit)\(suffix)" }
        }
        return "\(bytes)"
    }
}

extension String {
    func trimmingSpaces() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
