import Foundation
import Support
import TensorCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Element types named by the safetensors format (https://huggingface.co/docs/safetensors).
///
/// Every type is known so that a file's layout can be validated; only `F32`, `F16` and `BF16`
/// can be read as Float32 (`isReadable`).
public enum SafetensorsDType: String, Sendable, CaseIterable {
    case bool = "BOOL", u8 = "U8", i8 = "I8", f8e5m2 = "F8_E5M2", f8e4m3 = "F8_E4M3"
    case i16 = "I16", u16 = "U16", f16 = "F16", bf16 = "BF16"
    case i32 = "I32", u32 = "U32", f32 = "F32", f64 = "F64", i64 = "I64", u64 = "U64"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .bool, .u8, .i8, .f8e5m2, .f8e4m3: 1
        case .i16, .u16, .f16, .bf16: 2
        case .i32, .u32, .f32: 4
        case .f64, .i64, .u64: 8
        }
    }

    /// Whether `SafetensorsFile.floats(_:)` can convert this type to Float32.
    public var isReadable: Bool { self == .f32 || self == .f16 || self == .bf16 }

    /// "F32, F16, BF16" — for error messages.
    public static let readableList = "F32, F16, BF16"
}

/// One tensor's header entry: element type, shape, and its bytes within the data section.
public struct SafetensorsEntry: Sendable, Equatable {
    public let dtype: SafetensorsDType
    public let shape: [Int]
    /// `data_offsets` from the header: byte range relative to the start of the data section.
    public let dataOffsets: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { dataOffsets.count }
}

/// What a safetensors header says, validated against the file's size: every entry lies in the
/// data section, and together they cover it exactly.
public struct SafetensorsLayout: Sendable {
    public let entries: [String: SafetensorsEntry]
    /// String pairs from `__metadata__` (non-string values are skipped).
    public let metadata: [String: String]
    /// Absolute file offset of the data section (8 + header length).
    public let dataStart: Int
}

/// A memory-mapped `.safetensors` file: an 8-byte little-endian header length, a JSON header
/// `{name: {dtype, shape, data_offsets}, "__metadata__": {..}}`, then the raw tensor bytes.
///
/// The header is validated completely at `init`; tensor bytes are only touched when read.
public final class SafetensorsFile: @unchecked Sendable {
    // @unchecked: the mapping is read-only and never changes after init.
    public let url: URL
    public let entries: [String: SafetensorsEntry]
    /// String pairs from `__metadata__` (non-string values are skipped).
    public let metadata: [String: String]
    public let fileSize: Int
    /// Absolute file offset of the data section (8 + header length).
    public let dataStart: Int
    private let base: UnsafeRawPointer

    /// Tensor names, sorted.
    public var names: [String] { entries.keys.sorted() }

    public init(url: URL) throws {
        self.url = url
        let path = url.path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw GPT2Error.fileUnreadable(file: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw GPT2Error.fileUnreadable(file: path, reason: String(cString: strerror(errno)))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw GPT2Error.fileUnreadable(file: path, reason: "not a regular file")
        }
        let size = Int(st.st_size)
        guard size >= 8 else { throw GPT2Error.fileTooShort(file: path, size: size) }
        guard let map = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), map != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw GPT2Error.fileUnreadable(file: path, reason: "mmap failed: " + String(cString: strerror(errno)))
        }
        let base = UnsafeRawPointer(map)
        do {
            let layout = try Self.parse(bytes: UnsafeRawBufferPointer(start: base, count: size), file: path)
            self.entries = layout.entries
            self.metadata = layout.metadata
            self.dataStart = layout.dataStart
        } catch {
            munmap(map, size)
            throw error
        }
        self.fileSize = size
        self.base = base
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), fileSize)
    }

    /// The header entry for `name`, or an error naming the file and tensor.
    public func entry(_ name: String) throws -> SafetensorsEntry {
        guard let e = entries[name] else { throw GPT2Error.noSuchTensor(file: url.path, tensor: name) }
        return e
    }

    /// Calls `body` with the stored bytes of tensor `name` (valid only during the call).
    public func withRawBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let e = try entry(name)
        return try body(UnsafeRawBufferPointer(start: base + dataStart + e.dataOffsets.lowerBound,
                                               count: e.byteCount))
    }

    /// Tensor `name` converted to Float32 into `out` (its element count), row-major in stored order.
    public func read(_ name: String, into out: FloatPointer) throws {
        let e = try entry(name)
        guard e.dtype.isReadable else {
            throw GPT2Error.unsupportedDType(file: url.path, tensor: name, dtype: e.dtype.rawValue)
        }
        let n = e.elementCount
        try withRawBytes(name) { raw in
            switch e.dtype {
            case .f32:
                // Little-endian file, little-endian host: a plain copy (source may be unaligned).
                if n > 0 { memcpy(out, raw.baseAddress!, n * 4) }
                #if _endian(big)
                for i in 0..<n { out[i] = Float(bitPattern: UInt32(littleEndian: out[i].bitPattern)) }
                #endif
            case .f16:
                halfToFloatTable.withUnsafeBufferPointer { table in
                    for i in 0..<n {
                        out[i] = table[Int(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))]
                    }
                }
            case .bf16:
                for i in 0..<n {
                    let h = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                    out[i] = Float(bitPattern: UInt32(h) << 16)
                }
            default:
                break  // excluded by isReadable above
            }
        }
    }

    /// Releases the memory pages that hold tensor `name`'s bytes (they stay in the page cache and
    /// are read back from the file if touched again): once a tensor is converted into the model's
    /// own buffer, the mapped copy need not stay resident beside it.
    public func release(_ name: String) {
        guard let e = entries[name] else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = dataStart + e.dataOffsets.lowerBound, end = dataStart + e.dataOffsets.upperBound
        let first = (start + page - 1) / page * page, last = end / page * page
        if last > first { madvise(UnsafeMutableRawPointer(mutating: base + first), last - first, Int32(MADV_DONTNEED)) }
    }

    /// Tensor `name` converted to Float32, row-major in stored order.
    public func floats(_ name: String) throws -> [Float] {
        let n = try entry(name).elementCount
        return try [Float](unsafeUninitializedCapacity: n) { out, count in
            if let p = out.baseAddress {
                try read(name, into: p)
            } else {
                var none: Float = 0  // an empty tensor: its dtype checked, nothing read
                try read(name, into: &none)
            }
            count = n
        }
    }

    /// Tensor `name` as Float32 with its stored shape.
    public func tensor(_ name: String) throws -> Tensor {
        let e = try entry(name)
        return Tensor(shape: e.shape, data: try floats(name))
    }

    // MARK: Header parsing

    /// Validates the bytes of a whole safetensors file exactly as `init(url:)` does, without a
    /// file (for the fuzz targets); `file` is only used in messages. Tensor bytes are not read.
    public static func parse(bytes: UnsafeRawBufferPointer, file: String) throws -> SafetensorsLayout {
        let size = bytes.count
        guard size >= 8 else { throw GPT2Error.fileTooShort(file: file, size: size) }
        let headerLength = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(size - 8) else {
            throw GPT2Error.headerLengthBeyondFile(file: file, headerLength: headerLength, fileSize: size)
        }
        let dataStart = 8 + Int(headerLength)
        let header = Data(UnsafeRawBufferPointer(rebasing: bytes[8..<dataStart]))
        let parsed = try parseHeader(header, file: file, dataLength: size - dataStart)
        return SafetensorsLayout(entries: parsed.entries, metadata: parsed.metadata, dataStart: dataStart)
    }

    private static func parseHeader(_ header: Data, file: String, dataLength: Int) throws
        -> (entries: [String: SafetensorsEntry], metadata: [String: String])
    {
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: header, options: [])
        } catch {
            throw GPT2Error.headerInvalid(file: file, reason: "the header is not valid JSON")
        }
        guard let object = json as? [String: Any] else {
            throw GPT2Error.headerInvalid(file: file, reason: "the header is not a JSON object")
        }
        var entries: [String: SafetensorsEntry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else {
                    throw GPT2Error.headerInvalid(file: file, reason: "__metadata__ is not a JSON object")
                }
                for (k, v) in m { if let s = v as? String { metadata[k] = s } }
                continue
            }
            entries[name] = try parseEntry(value, name: name, file: file, dataLength: dataLength)
        }
        // The format requires the tensors to cover the data section exactly: back to back from
        // offset 0 to its end, no gap, no overlap, nothing after. A header length that is off by a
        // few bytes (its JSON ending in padding) shifts every tensor and is caught here.
        let ordered = entries.sorted {
            ($0.value.dataOffsets.lowerBound, $0.value.dataOffsets.upperBound, $0.key)
                < ($1.value.dataOffsets.lowerBound, $1.value.dataOffsets.upperBound, $1.key)
        }
        var covered = 0
        var previous: String?
        for (name, entry) in ordered {
            let range = entry.dataOffsets
            if range.lowerBound < covered, let previous {
                throw GPT2Error.overlappingOffsets(file: file, tensor: name, other: previous)
            }
            if range.lowerBound > covered {
                throw GPT2Error.dataNotCovered(file: file, reason: "bytes \(covered)..<\(range.lowerBound) of the data section belong to no tensor (tensor \(name) starts at \(range.lowerBound))")
            }
            covered = range.upperBound
            if !range.isEmpty { previous = name }
        }
        if covered != dataLength {
            throw GPT2Error.dataNotCovered(file: file, reason: "the tensors end at byte \(covered) of the data section but it holds \(dataLength) bytes (wrong header length or trailing bytes)")
        }
        return (entries, metadata)
    }

    private static func parseEntry(_ value: Any, name: String, file: String, dataLength: Int) throws -> SafetensorsEntry {
        func invalid(_ reason: String) -> GPT2Error {
            .entryInvalid(file: file, tensor: name, reason: reason)
        }
        guard let fields = value as? [String: Any] else { throw invalid("its entry is not a JSON object") }
        guard let dtypeName = fields["dtype"] else { throw invalid("its entry has no \"dtype\"") }
        guard let dtypeString = dtypeName as? String else { throw invalid("\"dtype\" is not a string") }
        guard let dtype = SafetensorsDType(rawValue: dtypeString) else {
            throw GPT2Error.unknownDType(file: file, tensor: name, dtype: dtypeString)
        }
        guard let shapeValue = fields["shape"] else { throw invalid("its entry has no \"shape\"") }
        guard let shapeArray = shapeValue as? [Any] else { throw invalid("\"shape\" is not an array") }
        var shape: [Int] = []
        for dim in shapeArray {
            guard let d = jsonInt(dim), d >= 0 else { throw invalid("\"shape\" \(shapeArray) holds a non-integer or negative size") }
            shape.append(d)
        }
        guard let offsetsValue = fields["data_offsets"] else { throw invalid("its entry has no \"data_offsets\"") }
        guard let offsets = offsetsValue as? [Any], offsets.count == 2,
              let begin = jsonInt(offsets[0]), let end = jsonInt(offsets[1]), begin >= 0, begin <= end
        else { throw invalid("\"data_offsets\" must be two integers [begin, end] with 0 ≤ begin ≤ end") }
        guard end <= dataLength else {
            throw GPT2Error.offsetsOutOfRange(file: file, tensor: name, begin: begin, end: end, dataLength: dataLength)
        }
        var bytes = dtype.byteSize
        for d in shape {
            let (p, overflow) = bytes.multipliedReportingOverflow(by: d)
            guard !overflow else { throw invalid("shape \(shape) is too large") }
            bytes = p
        }
        guard bytes == end - begin else {
            throw GPT2Error.sizeMismatch(file: file, tensor: name, shape: shape, dtype: dtype.rawValue,
                                               expectedBytes: bytes, foundBytes: end - begin)
        }
        return SafetensorsEntry(dtype: dtype, shape: shape, dataOffsets: begin..<end)
    }

    /// JSON integers only: `as? Int` alone would also take `true` as 1.
    private static func jsonInt(_ value: Any) -> Int? {
        if case .integer(let n) = JSONKind(value) { n } else { nil }
    }
}

/// IEEE 754 binary16 → binary32, exact for every pattern (subnormals, ±0, ±inf, NaN payloads).
public func halfToFloat(_ h: UInt16) -> Float {
    let sign: UInt32 = UInt32(h & 0x8000) << 16
    let exponent = UInt32(h >> 10) & 0x1f
    let mantissa = UInt32(h & 0x3ff)
    switch exponent {
    case 0:
        // Zero or subnormal: mantissa · 2^-24, exactly representable in Float32.
        let magnitude = Float(mantissa) * 0x1p-24
        return sign != 0 ? -magnitude : magnitude
    case 31:
        return Float(bitPattern: sign | 0x7f80_0000 | (mantissa << 13))
    default:
        return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
    }
}

/// binary32 → binary16, rounding to nearest even (IEEE 754), overflowing to ±inf.
public func floatToHalf(_ f: Float) -> UInt16 {
    let bits = f.bitPattern
    let sign = UInt16((bits >> 16) & 0x8000)
    let exponent = Int((bits >> 23) & 0xff)
    var mantissa = bits & 0x7f_ffff
    if exponent == 0xff { return sign | 0x7c00 | (mantissa != 0 ? 0x200 : 0) }  // inf, NaN
    var e = exponent - 127 + 15
    if e >= 0x1f { return sign | 0x7c00 }
    if e <= 0 {
        // Subnormal half (or zero): shift the implicit 1 in, round to nearest even.
        if e < -10 { return sign }
        mantissa |= 0x80_0000
        let shift = UInt32(14 - e)
        let halfway = UInt32(1) << (shift - 1)
        var m = mantissa >> shift
        let rest = mantissa & ((UInt32(1) << shift) - 1)
        if rest > halfway || (rest == halfway && m & 1 == 1) { m += 1 }
        return sign | UInt16(m)
    }
    var m = mantissa >> 13
    let rest = mantissa & 0x1fff
    if rest > 0x1000 || (rest == 0x1000 && m & 1 == 1) {
        m += 1
        if m == 0x400 { m = 0; e += 1; if e >= 0x1f { return sign | 0x7c00 } }
    }
    return sign | UInt16(e << 10) | UInt16(m)
}

/// All 65536 half values, so F16 tensors convert with one lookup per element.
private let halfToFloatTable: [Float] = (0...UInt16.max).map(halfToFloat)

/// Writes tensors as a `.safetensors` file that `safetensors.numpy.load_file` and transformers read.
public enum SafetensorsWriter {
    /// Writes `tensors` (keys sorted) plus string `metadata` to `url`, atomically (a temporary file
    /// in the same folder is renamed over `url`). Each tensor is stored F32, or F16 when
    /// `dtype(name)` says so (rounded to nearest; a value beyond F16's range is an error).
    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:], to url: URL,
                             dtype: (String) -> SafetensorsDType = { _ in .f32 }) throws {
        let path = url.path
        let names = tensors.keys.sorted()
        let headerBytes = try header(tensors, names: names, metadata: metadata, path: path, dtype: dtype)
        do {
            try Files.writeAtomically(url) { handle in
                var prefix = Data(count: 8)
                prefix.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(headerBytes.count).littleEndian, as: UInt64.self) }
                try handle.write(contentsOf: prefix + Data(headerBytes))
                for name in names {
                    // In slices of 1 Mi values: no second copy of a large tensor in memory.
                    let half = dtype(name) == .f16
                    try tensors[name]!.data.withUnsafeBufferPointer { values in
                        for start in stride(from: 0, to: values.count, by: 1 << 20) {
                            let slice = UnsafeBufferPointer(rebasing: values[start..<min(values.count, start + (1 << 20))])
                            if half {
                                let halves = slice.map { floatToHalf($0).littleEndian }
                                try halves.withUnsafeBytes { try handle.write(contentsOf: Data($0)) }
                            } else {
                                #if _endian(big)
                                let stored = slice.map { Float(bitPattern: $0.bitPattern.littleEndian) }
                                try stored.withUnsafeBytes { try handle.write(contentsOf: Data($0)) }
                                #else
                                try handle.write(contentsOf: Data(UnsafeRawBufferPointer(slice)))
                                #endif
                            }
                        }
                    }
                }
            }
        } catch {
            throw GPT2Error.writeFailed(file: path, reason: error.description)
        }
    }

    /// The header of a file holding `tensors` under `names`: JSON padded with spaces so that the
    /// data section starts 8-byte aligned, as the reference writer does. Checks every tensor.
    private static func header(_ tensors: [String: Tensor], names: [String], metadata: [String: String], path: String,
                               dtype: (String) -> SafetensorsDType) throws -> [UInt8] {
        var header = "{"
        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(JSONText.literal($0)):\(JSONText.literal(metadata[$0]!))" }
            fields.append("\"__metadata__\":{" + pairs.joined(separator: ",") + "}")
        }
        var offset = 0
        for name in names {
            let t = tensors[name]!
            guard name != "__metadata__" else {
                throw GPT2Error.writeFailed(file: path, reason: "\"__metadata__\" cannot be a tensor name")
            }
            guard t.shape.allSatisfy({ $0 >= 0 }), t.shape.reduce(1, *) == t.data.count else {
                throw GPT2Error.writeFailed(file: path, reason: "tensor \(name) has shape \(t.shape) but \(t.data.count) values")
            }
            let type = dtype(name)
            guard type == .f32 || type == .f16 else {
                throw GPT2Error.writeFailed(file: path, reason: "tensor \(name): lnlens writes F32 or F16, not \(type.rawValue)")
            }
            if type == .f16, let bad = t.data.first(where: { $0.isFinite && abs($0) > 65504 }) {
                throw GPT2Error.writeFailed(file: path, reason: "tensor \(name) holds \(bad), beyond F16's range; store it as F32")
            }
            let shape = t.shape.map(String.init).joined(separator: ",")
            let size = type.byteSize * t.data.count
            fields.append("\(JSONText.literal(name)):{\"dtype\":\"\(type.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + size)]}")
            offset += size
        }
        header += fields.joined(separator: ",") + "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
        return headerBytes
    }
}
