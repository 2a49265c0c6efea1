// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "lnlens",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lnlens", targets: ["lnlens"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        .target(name: "Support"),
        // MPI for data-parallel train/remove-ln: real with -DLNLENS_MPI and MPI's flags (the Makefile adds them), stubs otherwise.
        .target(name: "CMPI"),
        .target(name: "Distributed", dependencies: ["CMPI"]),
        .target(name: "TensorCore", dependencies: ["CBLAS"]),
        .target(name: "Tokenizer", dependencies: ["Support"]),
        .target(name: "GPT2", dependencies: ["TensorCore", "Support"]),
        .target(name: "Analysis", dependencies: ["GPT2", "Tokenizer", "TensorCore", "Support"]),
        .target(name: "Training", dependencies: ["GPT2", "TensorCore", "Tokenizer", "Support", "Distributed"]),
        .target(name: "Jobs", dependencies: ["Analysis", "GPT2", "ResultsStore", "Support", "TensorCore", "Training", "Tokenizer", "Distributed"]),
        .target(name: "ResultsStore", dependencies: ["Support", .product(name: "GRDB", package: "GRDB.swift")]),
        .target(name: "Report", dependencies: ["Analysis", "Jobs", "ResultsStore", "Support"]),
        .executableTarget(
            name: "lnlens",
            dependencies: [
                "GPT2", "Tokenizer", "TensorCore", "Analysis", "ResultsStore", "Support", "Jobs", "Report", "Training", "Distributed",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(name: "lnlens-bench", dependencies: ["GPT2", "TensorCore", "Analysis", "Tokenizer", "ResultsStore", "Jobs", "Support", "Training"]),
        // Fuzz targets for the file parsers; `make fuzz` builds them with -sanitize=fuzzer (fuzz/README.md).
        .target(name: "CLibFuzzer"),
        .executableTarget(name: "lnlens-fuzz", dependencies: ["CLibFuzzer", "GPT2", "Tokenizer", "Analysis", "Jobs", "ResultsStore", "Support", "Training"]),
        .testTarget(name: "SupportTests", dependencies: ["Support"]),
        .testTarget(name: "DistributedTests", dependencies: ["Distributed"]),
        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore"]),
        .testTarget(name: "TokenizerTests", dependencies: ["Tokenizer"], resources: []),
        .testTarget(name: "GPT2Tests", dependencies: ["GPT2", "Tokenizer", "TensorCore"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "GPT2", "Tokenizer", "TensorCore", "Support"]),
        .testTarget(name: "AnalysisTests", dependencies: ["Analysis", "GPT2", "Tokenizer", "TensorCore", "Support"]),
        .testTarget(name: "JobsTests", dependencies: ["Jobs", "Analysis", "GPT2", "Tokenizer", "ResultsStore", "Training"]),
        .testTarget(name: "ResultsStoreTests", dependencies: ["ResultsStore", "Support", .product(name: "GRDB", package: "GRDB.swift")]),
        .testTarget(name: "ReportTests", dependencies: ["Report", "ResultsStore", "Analysis", "Jobs"]),
        .testTarget(name: "CLITests", dependencies: ["lnlens", "ResultsStore", "Support", "Training", .product(name: "GRDB", package: "GRDB.swift")]),
    ]
)
