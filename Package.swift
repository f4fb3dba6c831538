// swift-tools-version:6.0
import PackageDescription

// C libraries come from the system through pkg-config; `scripts/setup.sh` installs them.
let package = Package(
    name: "rqat",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "rqat", targets: ["rqat"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System libraries (headers + link flags via pkg-config).
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"])]),
        // Hand-written C kernels where Swift's SIMD falls short (vectorised by the C compiler).
        .target(name: "CKernels"),

        .target(name: "Tensors", dependencies: ["COpenBLAS", "CKernels"]),
        .target(name: "Formats", dependencies: ["Tensors"]),
        .target(name: "Model", dependencies: ["Tensors", "Formats"]),
        .target(name: "Train", dependencies: ["Tensors", "Formats", "Model"]),
        .target(name: "Quant", dependencies: ["Tensors", "Formats", "Model", "Train", "CKernels"]),
        .target(name: "Cluster", dependencies: ["CMPI", "CZstd", "CKernels", "Tensors", "Formats", "Model", "Train"]),
        // Reasoning tasks (gsm8k, gsm-symbolic, arith) and answer checking; no model inside.
        .target(name: "Reasoning", dependencies: ["Tensors", "Formats"]),
        // Evaluations returning Codable results: perplexity, held-out KL to a teacher, accuracy.
        .target(name: "Eval", dependencies: ["Tensors", "Formats", "Model", "Train", "Reasoning"]),
        // Reinforcement learning on rollouts: GRPO's loss and objective, group advantages.
        .target(name: "RL", dependencies: ["Tensors", "Formats", "Model", "Train", "Reasoning", "Eval"]),
        // The jobs the command line runs (distillation roles, SFT, PTQ, generation, accuracy
        // evaluation, task data, calibration text) and what they leave behind for other tools (per-rank train summaries, the PTQ report).
        .target(name: "Jobs", dependencies: ["Tensors", "Formats", "Model", "Train", "Quant", "Cluster", "Eval", "Reasoning", "RL"]),
        // `rqat pipeline`: the staged workflow (teacher, traces, calibration, PTQ, QAT, evaluation)
        // in stage directories with manifests, and its report (markdown, HTML, SVG).
        .target(name: "Pipeline", dependencies: ["Tensors", "Formats", "Model", "Train", "Quant", "Cluster", "Eval", "Reasoning", "Jobs", "RL"]),
        // The measurements of `rqat bench`, each returning Codable records (the --json lines).
        .target(name: "Bench", dependencies: ["Tensors", "Formats", "Model", "Train", "Quant", "Cluster", "Eval", "Jobs", "Reasoning"]),
        .executableTarget(name: "rqat", dependencies: [
            "Tensors", "Formats", "Model", "Train", "Quant", "Cluster", "Eval", "Jobs", "Bench", "Reasoning", "Pipeline", "RL",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Locates Tests/Fixtures (committed golden files) and assets/ (fetched model, data).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "SystemLibrariesTests", dependencies: ["CMPI", "COpenBLAS", "CZstd"]),
        .testTarget(name: "TensorsTests", dependencies: ["Tensors", "CKernels"]),
        .testTarget(name: "FormatsTests", dependencies: ["Formats", "TestSupport"]),
        .testTarget(name: "ModelTests", dependencies: ["Model", "Formats", "TestSupport"]),
        .testTarget(name: "TrainTests", dependencies: ["Train", "Model", "Formats", "TestSupport"]),
        .testTarget(name: "QuantTests", dependencies: ["Quant", "Train", "Model", "Formats", "TestSupport"]),
        .testTarget(name: "ReasoningTests", dependencies: ["Reasoning", "Formats", "TestSupport"]),
        .testTarget(name: "EvalTests", dependencies: ["Eval", "Reasoning", "Train", "Model", "Formats", "Tensors", "TestSupport"]),
        .testTarget(name: "RLTests", dependencies: ["RL", "Train", "Quant", "Eval", "Reasoning", "Model", "Formats", "Tensors", "TestSupport"]),
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "Train", "Model", "Formats", "Quant", "Tensors", "TestSupport"]),
        .testTarget(name: "JobsTests", dependencies: ["Jobs", "RL", "Eval", "Reasoning", "Cluster", "Quant", "Train", "Model", "Formats", "Tensors", "TestSupport"]),
        .testTarget(name: "PipelineTests", dependencies: ["Pipeline", "Jobs", "Eval", "Reasoning", "Formats", "Tensors", "TestSupport"]),
        .testTarget(name: "BenchTests", dependencies: ["Bench", "Reasoning", "Jobs", "Eval", "Cluster", "Train", "Model", "Formats", "Tensors", "TestSupport"]),
        // Multi-rank checks of the MPI layer; ClusterTests starts it under mpirun (XCTest is one process).
        .executableTarget(name: "rqat-mpi-check", dependencies: ["Cluster", "Tensors", "Train"], path: "Tests/MPICheck"),
        // Runs the built `rqat` executable as a user would.
        .testTarget(name: "rqatTests", dependencies: ["TestSupport", "Formats", "Tensors"]),
        // The bit-exact reference set recorded before the architecture change (scripts/record-reference-set.sh).
        .testTarget(name: "ReferenceSetTests", dependencies: ["TestSupport", "CKernels", "Formats", "Model", "Tensors"]),
    ],
    // Numerical kernels share raw pointers across threads on purpose (disjoint ranges);
    // Swift 5 mode keeps that readable without wrapping every pointer in a Sendable box.
    swiftLanguageModes: [.v5]
)
