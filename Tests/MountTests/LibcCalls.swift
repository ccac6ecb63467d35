import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// C library calls Swift's Glibc module does not export: setxattr(2) and friends
/// (<sys/xattr.h> is not part of it), fallocate(2) and copy_file_range(2) (declared only
/// under _GNU_SOURCE). They are looked up in the C library at run time with dlsym and
/// called through C function pointers of their documented signatures.
enum LibcCalls {
    private static func symbol<T>(_ name: String, as type: T.Type) -> T {
        // dlopen(NULL) is the program itself, whose global scope includes the C library.
        guard let pointer = dlsym(dlopen(nil, RTLD_NOW), name) else { fatalError("libc has no \(name)") }
        return unsafeBitCast(pointer, to: type)
    }

    typealias SetFunction = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeRawPointer?, Int, Int32) -> Int32
    typealias GetFunction = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeMutableRawPointer?, Int) -> Int
    typealias ListFunction = @convention(c) (UnsafePointer<CChar>, UnsafeMutablePointer<CChar>?, Int) -> Int
    typealias RemoveFunction = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>) -> Int32

    static let set = symbol("setxattr", as: SetFunction.self)
    static let get = symbol("getxattr", as: GetFunction.self)
    static let list = symbol("listxattr", as: ListFunction.self)
    static let remove = symbol("removexattr", as: RemoveFunction.self)

    typealias FallocateFunction = @convention(c) (Int32, Int32, Int64, Int64) -> Int32
    typealias CopyFileRangeFunction = @convention(c) (Int32, UnsafeMutablePointer<Int64>?, Int32,
                                                      UnsafeMutablePointer<Int64>?, Int, UInt32) -> Int
    static let fallocate = symbol("fallocate", as: FallocateFunction.self)
    static let copyFileRange = symbol("copy_file_range", as: CopyFileRangeFunction.self)
}

func fallocate(_ fd: Int32, _ mode: Int32, _ offset: Int64, _ length: Int64) -> Int32 {
    LibcCalls.fallocate(fd, mode, offset, length)
}

/// copy_file_range(2) with explicit offsets (the descriptors' positions are not used).
func copyFileRange(_ source: Int32, _ sourceOffset: Int64, _ destination: Int32, _ destinationOffset: Int64,
                   _ length: Int) -> Int {
    var input = sourceOffset, output = destinationOffset
    return LibcCalls.copyFileRange(source, &input, destination, &output, length, 0)
}

func setxattr(_ path: String, _ name: String, _ value: String, _ size: Int, _ flags: Int32) -> Int32 {
    value.withCString { LibcCalls.set(path, name, $0, size, flags) }
}

func getxattr(_ path: String, _ name: String, _ buffer: UnsafeMutableRawPointer?, _ size: Int) -> Int {
    LibcCalls.get(path, name, buffer, size)
}

func listxattr(_ path: String, _ buffer: UnsafeMutablePointer<CChar>?, _ size: Int) -> Int {
    LibcCalls.list(path, buffer, size)
}

func removexattr(_ path: String, _ name: String) -> Int32 {
    LibcCalls.remove(path, name)
}
