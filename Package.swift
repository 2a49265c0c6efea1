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
    ],
    targets: [
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        .target(name: "TensorCore", dependencies: ["CBLAS"]),
        .target(name: "Tokenizer"),
        .target(name: "GPT2", dependencies: ["TensorCore"]),
        .executableTarget(
            name: "lnlens",
            dependencies: [
                "GPT2", "Tokenizer", "TensorCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore"]),
        .testTarget(name: "TokenizerTests", dependencies: ["Tokenizer"], resources: []),
        .testTarget(name: "GPT2Tests", dependencies: ["GPT2", "Tokenizer", "TensorCore"]),
    ]
)
