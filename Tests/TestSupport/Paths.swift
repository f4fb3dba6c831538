import Foundation
import XCTest

/// Where tests find committed golden files and fetched assets, independent of the working directory.
package enum TestPaths {
    /// The package root (three levels above this file: Tests/TestSupport/Paths.swift).
    package static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    package static let fixtures = root.appendingPathComponent("Tests/Fixtures")
    package static let assets = root.appendingPathComponent("assets")
    package static let smolLM2GGUF = assets.appendingPathComponent("SmolLM2-135M-Instruct.Q4_1.gguf")
    package static let gsmTemplates = assets.appendingPathComponent("gsm-symbolic/eng/symbolic")

    package static func fixture(_ name: String) -> URL { fixtures.appendingPathComponent(name) }

    /// `url` when the file exists; otherwise the calling test is skipped, naming the script that
    /// makes the file (scripts/fetch-assets.sh for assets/, scripts/make-reference.py otherwise).
    @discardableResult
    package static func require(_ url: URL) throws -> URL {
        guard FileManager.default.fileExists(atPath: url.path) else {
            let script = url.path.hasPrefix(assets.path) ? "scripts/fetch-assets.sh" : "scripts/make-reference.py"
            throw XCTSkip("\(url.path) missing: run \(script)")
        }
        return url
    }

    /// Decodes a JSON fixture; the error names the script that writes it.
    package static func loadJSON<T: Decodable>(_ type: T.Type, fixture name: String) throws -> T {
        let url = fixture(name)
        guard let data = try? Data(contentsOf: url) else {
            throw FixtureMissing(path: url.path)
        }
        return try JSONDecoder().decode(T.self, from: data)
    }
}

package struct FixtureMissing: Error, CustomStringConvertible {
    package let path: String
    package var description: String { "\(path) missing: run scripts/make-reference.py" }
}

extension XCTestCase {
    /// A fresh directory under the system's temporary directory, removed when the test ends
    /// unless the environment has RQAT_KEEP_TEST_DIRS (to look at what a failing run wrote).
    package func makeScratchDirectory(_ prefix: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock {
            if ProcessInfo.processInfo.environment["RQAT_KEEP_TEST_DIRS"] == nil { try? FileManager.default.removeItem(at: dir) }
        }
        return dir
    }
}
