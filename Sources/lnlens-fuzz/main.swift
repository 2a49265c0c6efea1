// lnlens-fuzz TARGET [libFuzzer options] [CORPUS_DIR…]
//
// Fuzz targets for the parsers of every file lnlens reads (Targets.swift). Built with
// `-sanitize=fuzzer,address` (make fuzz) this is a libFuzzer binary; in an ordinary build it
// replays the files and folders given, once each, so a crashing input can be rerun under a
// debugger. The target may also be named by $LNLENS_FUZZ_TARGET, which is how the processes
// libFuzzer starts for itself (-fork, -merge) find it.
import CLibFuzzer
import Foundation

/// One input to the current target; libFuzzer's own `main` (linked but unused) needs the name.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzTarget.current.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

let environmentKey = "LNLENS_FUZZ_TARGET"
var arguments = CommandLine.arguments
if ProcessInfo.processInfo.environment[environmentKey] == nil {
    guard arguments.count >= 2, FuzzTarget(rawValue: arguments[1]) != nil else {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")
        FileHandle.standardError.write(Data("usage: lnlens-fuzz \(names) [libFuzzer options] [CORPUS_DIR…]\n".utf8))
        exit(2)
    }
    setenv(environmentKey, arguments.remove(at: 1), 1)
}
do {
    try FuzzTarget.prepare()
} catch {
    FileHandle.standardError.write(Data("lnlens-fuzz: \(error.localizedDescription)\n".utf8))
    exit(2)
}

var argc = CInt(arguments.count)
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = UnsafeMutablePointer.allocate(capacity: arguments.count + 1)
for (i, argument) in arguments.enumerated() { argv![i] = strdup(argument) }
argv![arguments.count] = nil
let status = lnlens_libfuzzer_run(&argc, &argv, fuzzOneInput)
if status != -1 { exit(status) }

// Built without libFuzzer: replay.
var replayed = 0
for argument in arguments.dropFirst() where !argument.hasPrefix("-") {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory) else {
        FileHandle.standardError.write(Data("lnlens-fuzz: \(argument) does not exist\n".utf8))
        exit(2)
    }
    let files = isDirectory.boolValue
        ? ((try? FileManager.default.contentsOfDirectory(atPath: argument)) ?? []).sorted().map { argument + "/" + $0 }
        : [argument]
    for file in files {
        guard let data = FileManager.default.contents(atPath: file) else { continue }
        data.withUnsafeBytes { FuzzTarget.current.run($0) }
        replayed += 1
    }
}
print("lnlens-fuzz \(FuzzTarget.current.rawValue): replayed \(replayed) inputs without libFuzzer, no crash")
