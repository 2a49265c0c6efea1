import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The bytes of a file, read-only: a regular file mapped into memory (pages are read when
/// touched, so an 18 GB token file costs no memory up front), or a copy of bytes already in
/// memory (tests, fuzzing). Released with the object.
public final class MappedFile: @unchecked Sendable {
    // @unchecked: the bytes are never written after init.
    public let bytes: UnsafeRawBufferPointer
    private let mapped: Bool

    /// Maps the regular file at `url`; an empty file has no bytes.
    public init(_ url: URL) throws(FileProblem) {
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { throw FileProblem(Files.errnoReason(errno)) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileProblem(Files.errnoReason(errno)) }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw FileProblem("is a folder, not a file") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw FileProblem("is not a regular file") }
        let size = Int(st.st_size)
        mapped = size > 0
        guard size > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let map = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), map != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw FileProblem("cannot be mapped into memory: " + String(cString: strerror(errno)))
        }
        bytes = UnsafeRawBufferPointer(start: map, count: size)
    }

    /// A copy of `source`.
    public init(copying source: UnsafeRawBufferPointer) {
        mapped = false
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, source.count), alignment: 16)
        if let base = source.baseAddress, source.count > 0 { copy.baseAddress!.copyMemory(from: base, byteCount: source.count) }
        bytes = UnsafeRawBufferPointer(start: copy.baseAddress, count: source.count)
    }

    deinit {
        guard let base = bytes.baseAddress else { return }
        if mapped { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) } else { base.deallocate() }
    }
}
