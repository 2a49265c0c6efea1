import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a file could not be read, in words for a one-line message ("is a folder, not a file").
public struct FileProblem: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Reading input files and writing output files the same way everywhere: inputs give a short
/// reason instead of a Foundation error domain; outputs are written to a temporary file in the
/// same folder and renamed into place, so that a crash leaves the old file or the new one,
/// never half of one, and no output ever replaces one of the run's inputs.
public enum Files {
    /// The bytes of the regular file at `url`, or why not.
    public static func read(_ url: URL) throws(FileProblem) -> Data {
        var st = stat()
        guard stat(url.path, &st) == 0 else { throw FileProblem(errnoReason(errno)) }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw FileProblem("is a folder, not a file") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw FileProblem("is not a regular file") }
        do {
            return try Data(contentsOf: url)
        } catch {
            let ns = error as NSError
            if let posix = ns.userInfo[NSUnderlyingErrorKey] as? NSError, posix.domain == NSPOSIXErrorDomain {
                throw FileProblem(errnoReason(Int32(posix.code)))
            }
            throw FileProblem(ns.code == NSFileReadNoPermissionError ? "permission denied" : "cannot be read")
        }
    }

    static func errnoReason(_ code: Int32) -> String {
        switch code {
        case ENOENT: "does not exist"
        case EACCES: "permission denied"
        case ENOTDIR: "has a file where a folder is expected in its path"
        default: String(cString: strerror(code))
        }
    }

    /// Identity of an existing file (device and inode), so that two paths to one file (symlinks,
    /// hard links, `./a` and `a`) compare equal. nil when nothing exists at `path`.
    public static func identity(_ path: String) -> FileIdentity? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// Checks that `output` may be written: it must not be any of `inputs` (compared by file
    /// identity) and, unless `force`, must not exist yet. `option` names the flag in messages.
    public static func checkOutput(_ output: String, option: String, inputs: [String], force: Bool) throws(FileProblem) {
        let target = identity(output)
        if let target {
            for input in inputs where identity(input) == target {
                throw FileProblem("\(option) \(output) is \(input == output ? "one of this command's inputs" : "the same file as the input \(input)"); lnlens never overwrites an input: choose another file")
            }
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: output, isDirectory: &isDirectory), isDirectory.boolValue {
                throw FileProblem("\(option) \(output) is a folder; give a file name")
            }
            if !force { throw FileProblem("\(option) \(output) already exists; pass --force to replace it") }
        }
        let folder = URL(fileURLWithPath: output).deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw FileProblem("\(option) \(output): the folder \(folder) does not exist")
        }
    }

    /// Writes `output` atomically: `body` writes into a new temporary file beside it, which is
    /// flushed to disk and renamed over `output` (the folder is flushed too). On any error the
    /// temporary file is removed and `output` is untouched.
    public static func writeAtomically(_ output: URL, _ body: (FileHandle) throws -> Void) throws(FileProblem) {
        let folder = output.deletingLastPathComponent()
        let temporary = folder.appendingPathComponent(".\(output.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let fd = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileProblem("cannot create a file in \(folder.path): \(errnoReason(errno))") }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        do {
            try body(handle)
            try handle.synchronize()
            try handle.close()
        } catch {
            try? handle.close()
            unlink(temporary.path)
            throw FileProblem((error as? LocalizedError)?.errorDescription ?? "\(error)")
        }
        guard rename(temporary.path, output.path) == 0 else {
            let reason = errnoReason(errno)
            unlink(temporary.path)
            throw FileProblem(reason)
        }
        let dirFD = open(folder.path, O_RDONLY | O_DIRECTORY)
        if dirFD >= 0 { fsync(dirFD); close(dirFD) }
    }

    /// `writeAtomically` with bytes already in memory.
    public static func writeAtomically(_ data: Data, to output: URL) throws(FileProblem) {
        try writeAtomically(output) { try $0.write(contentsOf: data) }
    }
}

public struct FileIdentity: Equatable, Hashable, Sendable {
    public let device: UInt64
    public let inode: UInt64
}

extension String {
    /// Line breaks collapsed into spaces, so that a message stays one line.
    public var oneLine: String {
        split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
    }
}
