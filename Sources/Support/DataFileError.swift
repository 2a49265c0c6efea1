import Foundation

/// What is wrong with a data file (`--tokens FILE.bin|.npy`, `--dataset FILE.jsonl`): one line
/// naming the file, where in it (byte, token offset or line) and what to do.
public enum DataFileError: Error, LocalizedError, Equatable, Sendable {
    case unreadable(file: String, reason: String)
    case empty(file: String)
    /// A malformed or unsupported token file: `problem` says what (an .npy's magic, dtype, order,
    /// shape or size; a .bin that is an .npy).
    case malformed(file: String, problem: String)
    /// A headerless token file whose size is not a whole number of ids.
    case sizeNotMultiple(file: String, bytes: Int, dtype: TokenDType)
    /// A token id that the model cannot embed: the `offset`-th id of the file (from 0), at `byte`.
    case tokenOutOfRange(file: String, offset: Int, byte: Int, value: Int64, vocabSize: Int)
    /// A token dtype given for a file that records its own.
    case dtypeMismatch(file: String, stored: TokenDType, given: TokenDType)
    /// A JSON Lines row that cannot be used: `problem` says why.
    case badRow(file: String, line: Int, problem: String)
    case noRows(file: String)

    public var errorDescription: String? {
        switch self {
        case let .unreadable(file, reason):
            "\(file) \(reason)"
        case let .empty(file):
            "\(file) is empty: give a file of token ids (.bin, .npy) or of JSON rows (.jsonl)"
        case let .malformed(file, problem):
            "\(file): \(problem)"
        case let .sizeNotMultiple(file, bytes, dtype):
            "\(file): \(bytes) bytes is not a whole number of \(dtype.rawValue) token ids (\(dtype.byteSize) bytes each); "
                + "give the --token-dtype it was written with (nanoGPT's .bin: u16) or a file that is not cut short"
        case let .tokenOutOfRange(file, offset, byte, value, vocabSize):
            "\(file): the token at offset \(offset) (byte \(byte)) is \(value), but the model's token ids are 0…\(vocabSize - 1) "
                + "(vocab_size \(vocabSize)); the file was tokenized for another vocabulary or written with another --token-dtype"
        case let .dtypeMismatch(file, stored, given):
            "\(file) holds \(stored.rawValue) token ids (its .npy header says \(stored.npyDescr)) but --token-dtype is \(given.rawValue); drop --token-dtype for .npy files"
        case let .badRow(file, line, problem):
            "\(file) line \(line): \(problem)"
        case let .noRows(file):
            "\(file) holds no rows: give a JSON Lines file, one JSON object per line"
        }
    }
}
