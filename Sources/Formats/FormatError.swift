import Tensors

/// An input file that cannot be used. The message is one line naming the file, the problem
/// and, where there is one, the fix; the CLI prints it as is and exits non-zero.
package struct FormatError: UserFacingError, Equatable {
    package let path: String
    package let problem: String

    package init(_ path: String, _ problem: String) {
        self.path = path
        self.problem = problem
    }

    package var description: String { "\(path): \(problem)" }
}
