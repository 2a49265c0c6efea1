import Foundation

/// A file of token ids, memory-mapped: nanoGPT's `.bin` (a flat little-endian array with no
/// header, `u16` unless told otherwise, as its `prepare.py` writes with `np.memmap`) or a 1-D
/// `.npy` (its header gives the type). Ids are read where they lie, so a file larger than memory
/// costs only the pages a training touches.
public final class TokenFile: Sendable {
    /// The path as given (in messages).
    public let path: String
    public let dtype: TokenDType
    /// Ids in the file.
    public let count: Int
    /// The .npy format's major version; nil for a headerless file.
    public let npyVersion: Int?
    /// Byte offset of the first id.
    public let dataOffset: Int
    private let file: MappedFile

    /// Opens `url`: an `.npy` by its header (`dtype`, when given, must agree), any other file as
    /// a headerless array of `dtype` (default `u16`, nanoGPT's).
    public static func open(_ url: URL, dtype: TokenDType? = nil) throws(DataFileError) -> TokenFile {
        let path = url.relativePath
        let file: MappedFile
        do { file = try MappedFile(url) } catch { throw .unreadable(file: path, reason: error.description) }
        return try TokenFile(file, path: path, npy: url.pathExtension.lowercased() == "npy", dtype: dtype)
    }

    /// Reads `file` as an `.npy` (`npy`) or a headerless array of `dtype`; `path` names it in errors.
    public init(_ file: MappedFile, path: String, npy: Bool, dtype: TokenDType?) throws(DataFileError) {
        let bytes = file.bytes
        guard !bytes.isEmpty else { throw .empty(file: path) }
        if npy {
            let header = try NpyHeader.parse(bytes, file: path)
            if let dtype, dtype != header.dtype { throw .dtypeMismatch(file: path, stored: header.dtype, given: dtype) }
            (self.dtype, count, npyVersion, dataOffset) = (header.dtype, header.count, header.version, header.dataOffset)
        } else {
            let type = dtype ?? .u16
            if bytes.count >= 6, Array(bytes[0..<6]) == NpyHeader.magic {
                throw .malformed(file: path, problem: "the file starts with numpy's magic \\x93NUMPY: it is an .npy file; name it FILE.npy")
            }
            guard bytes.count % type.byteSize == 0 else { throw .sizeNotMultiple(file: path, bytes: bytes.count, dtype: type) }
            (self.dtype, count, npyVersion, dataOffset) = (type, bytes.count / type.byteSize, nil, 0)
        }
        self.path = path
        self.file = file
    }

    /// Id `i` (0 ≤ i < count), widened.
    public subscript(i: Int) -> Int64 {
        precondition(i >= 0 && i < count, "token index \(i) outside 0..<\(count)")
        let p = file.bytes.baseAddress! + dataOffset + i * dtype.byteSize
        switch dtype {
        case .u16: return Int64(UInt16(littleEndian: p.loadUnaligned(as: UInt16.self)))
        case .u32: return Int64(UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)))
        case .i32: return Int64(Int32(littleEndian: p.loadUnaligned(as: Int32.self)))
        case .i64: return Int64(littleEndian: p.loadUnaligned(as: Int64.self))
        }
    }

    /// The ids in `range`, as Int32 (call `validate` first: ids are then below the vocabulary).
    public func ids(_ range: Range<Int>) -> [Int32] { range.map { Int32(truncatingIfNeeded: self[$0]) } }

    /// Checks every id against a vocabulary of `vocabSize` and returns how many equal `eot`
    /// (the documents of an EOS-separated stream); the first id outside 0..<vocabSize is an
    /// error naming its offset.
    public func validate(vocabSize: Int, eot: Int) throws(DataFileError) -> Int {
        let (bad, eots) = switch dtype {
        case .u16: scan(UInt16.self, vocabSize: vocabSize, eot: eot)
        case .u32: scan(UInt32.self, vocabSize: vocabSize, eot: eot)
        case .i32: scan(Int32.self, vocabSize: vocabSize, eot: eot)
        case .i64: scan(Int64.self, vocabSize: vocabSize, eot: eot)
        }
        if let bad {
            throw .tokenOutOfRange(file: path, offset: bad, byte: dataOffset + bad * dtype.byteSize, value: self[bad], vocabSize: vocabSize)
        }
        return eots
    }

    /// The first id outside 0..<vocabSize (nil: none) and the count of `eot`s before it.
    private func scan<T: FixedWidthInteger>(_: T.Type, vocabSize: Int, eot: Int) -> (Int?, Int) {
        let p = file.bytes.baseAddress! + dataOffset
        let limit = Int64(vocabSize), e = Int64(eot)
        var eots = 0
        for i in 0..<count {
            let v = Int64(T(littleEndian: p.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self)))
            if v < 0 || v >= limit { return (i, eots) }
            if v == e { eots += 1 }
        }
        return (nil, eots)
    }

    /// XXH64 of the ids' bytes with their type (hex), recorded with a run and checked on resume.
    public var hash: String {
        let data = UnsafeRawBufferPointer(rebasing: file.bytes[dataOffset...])
        return dtype.rawValue + ":" + XXH64.hex(XXH64.hash(data, seed: 0))
    }
}
