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

    /// Any error as one line, Foundation's file errors in words ("disk full writing F",
    /// "permission denied: F") instead of their Cocoa domain and code.
    public static func describe(_ error: any Error) -> String {
        if let problem = error as? FileProblem { return problem.description }
        let ns = error as NSError
        guard ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain else {
            return ((error as? LocalizedError)?.errorDescription ?? "\(error)").oneLine
        }
        var code: Int32?
        if ns.domain == NSPOSIXErrorDomain { code = Int32(ns.code) }
        else if let u = ns.userInfo[NSUnderlyingErrorKey] as? NSError, u.domain == NSPOSIXErrorDomain { code = Int32(u.code) }
        let path = ns.userInfo[NSFilePathErrorKey] as? String ?? (ns.userInfo[NSURLErrorKey] as? URL)?.path
        let full = code == ENOSPC || (code == nil && ns.code == NSFileWriteOutOfSpaceError)
        if full { return path.map { "disk full writing \($0)" } ?? "disk full" }
        let reason: String
        if let code, code != 0 {
            reason = code == EDQUOT ? "disk quota exceeded" : code == EROFS ? "read-only file system" : errnoReason(code)
        } else {
            switch ns.code {
            case NSFileWriteNoPermissionError, NSFileReadNoPermissionError: reason = "permission denied"
            case NSFileNoSuchFileError, NSFileReadNoSuchFileError: reason = "does not exist"
            case NSFileWriteFileExistsError: reason = "already exists"
            case NSFileWriteVolumeReadOnlyError: reason = "read-only file system"
            default: reason = "input/output error"
            }
        }
        return path.map { "\(reason): \($0)" } ?? reason
    }

    static func errnoReason(_ code: Int32) -> String {
        switch code {
        case ENOENT: "does not exist"
        case EACCES: "permission denied"
        case ENOTDIR: "has a file where a folder is expected in its path"
        case ENOSPC: "disk full"
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

    /// Where `path` really is: every symlink and `..` resolved (realpath(3)). For a path that
    /// does not exist yet, its nearest existing ancestor is resolved and the rest appended.
    public static func resolvedPath(_ path: String) -> String {
        let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
        var head = absolute, tail: [String] = []
        while true {
            if let real = realpath(head, nil) {
                defer { free(real) }
                let base = String(cString: real)
                return tail.isEmpty ? base : (base == "/" ? "" : base) + "/" + tail.reversed().joined(separator: "/")
            }
            let url = URL(fileURLWithPath: head)
            let parent = url.deletingLastPathComponent().path
            if parent == head { return absolute }
            tail.append(url.lastPathComponent)
            head = parent
        }
    }

    /// The file type of what is at `path` without following a final symlink ("a FIFO", …), or nil
    /// when nothing is there. Regular files, folders and symlinks give nil too: the callers only
    /// need to name the kinds they refuse.
    static func specialKind(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        switch st.st_mode & S_IFMT {
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFIFO: return "a FIFO"
        case S_IFSOCK: return "a socket"
        default: return nil
        }
    }

    /// Checks that the file `output` may be written: it must not be any of `inputs` (compared by
    /// resolved path and by file identity, so symlinks and hard links count), must be a regular
    /// file if it exists (`--force` never replaces a device, FIFO, socket or folder), and, unless
    /// `force`, must not exist yet. `option` names the flag in messages.
    public static func checkOutput(_ output: String, option: String, inputs: [String], force: Bool) throws(FileProblem) {
        let target = identity(output)
        let resolved = resolvedPath(output)
        for input in inputs {
            if (target != nil && identity(input) == target) || resolvedPath(input) == resolved {
                throw FileProblem("\(option) \(output) is \(input == output ? "one of this command's inputs" : "the same file as the input \(input)"); lnlens never overwrites an input: choose another file")
            }
        }
        if target != nil {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: output, isDirectory: &isDirectory), isDirectory.boolValue {
                throw FileProblem("\(option) \(output) is a folder; give a file name")
            }
            if let kind = specialKind(output) {
                throw FileProblem("\(option) \(output) is \(kind), not a regular file; lnlens writes regular files only: give a file name")
            }
            if !force { throw FileProblem("\(option) \(output) already exists; pass --force to replace it") }
        }
        let folder = URL(fileURLWithPath: output).deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw FileProblem("\(option) \(output): the folder \(folder) does not exist")
        }
    }

    /// Checks that the folder `output` may be written (created, or replaced when `force`): it must
    /// not be, lie above, or hold a hard link to any of `inputs` (files or folders, compared by
    /// resolved path and by file identity, so symlinks and hard links count), and what exists
    /// there must be a folder. `option` names the flag in messages.
    public static func checkOutputFolder(_ output: String, option: String, inputs: [String], force: Bool) throws(FileProblem) {
        let resolved = resolvedPath(output)
        let target = identity(output)
        for input in inputs {
            let r = resolvedPath(input)
            if r == resolved || (target != nil && identity(input) == target) {
                throw FileProblem("\(option) \(output) is the input \(input); lnlens never overwrites an input: choose another folder")
            }
            if r.hasPrefix(resolved == "/" ? "/" : resolved + "/") || isAncestor(target, of: r) {
                throw FileProblem("\(option) \(output) holds the input \(input); lnlens never overwrites an input: choose another folder")
            }
        }
        guard target != nil else { return }
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: output, isDirectory: &isDirectory)
        guard isDirectory.boolValue else {
            throw FileProblem("\(option) \(output) is \(specialKind(output) ?? "a file"), not a folder; give a folder name")
        }
        if !force { return }
        // Files in the folder that are hard links to an input's files would be replaced in place by
        // no writer of lnlens (each writes a new file and renames it), but refuse them all the same:
        // the folder is about to be deleted, and with it the user's second name for the input.
        var inputFiles = Set<FileIdentity>()
        for input in inputs { for f in filesAt(input) { if let id = identity(f) { inputFiles.insert(id) } } }
        for f in filesAt(output) where identity(f).map(inputFiles.contains) == true {
            throw FileProblem("\(option) \(output) holds \(URL(fileURLWithPath: f).lastPathComponent), a hard link to an input's file; lnlens never overwrites an input: choose another folder")
        }
    }

    /// Whether the folder with identity `folder` is one of the ancestors of the resolved path `path`.
    private static func isAncestor(_ folder: FileIdentity?, of path: String) -> Bool {
        guard let folder else { return false }
        var url = URL(fileURLWithPath: path).deletingLastPathComponent()
        while true {
            if identity(url.path) == folder { return true }
            let parent = url.deletingLastPathComponent()
            if parent.path == url.path { return false }
            url = parent
        }
    }

    /// The regular files at `path`: itself if it is one, its direct entries if it is a folder.
    private static func filesAt(_ path: String) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return [] }
        guard isDirectory.boolValue else { return [path] }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return entries.map { path + "/" + $0 }.filter { p in
            var d: ObjCBool = false
            return FileManager.default.fileExists(atPath: p, isDirectory: &d) && !d.boolValue
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
            let reason = describe(error)
            throw FileProblem(reason.hasPrefix("disk full") ? "disk full writing \(output.path)" : reason)
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
