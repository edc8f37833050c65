"""An `ml_environment`'s files act as `files` for dependents such as `python_tests`."""

from __future__ import annotations

from pants.core.target_types import FileSourceField
from pants.engine.rules import collect_rules, rule
from pants.engine.target import GeneratedSources, GenerateSourcesRequest
from pants.engine.unions import UnionRule
from pants.util.logging import LogLevel

from buildenv_pants.target_types import MlEnvironmentSourcesField


class MlEnvironmentAsFilesRequest(GenerateSourcesRequest):
    input = MlEnvironmentSourcesField
    output = FileSourceField
    exportable = False


@rule(desc="Use `ml_environment` sources as files", level=LogLevel.DEBUG)
async def ml_environment_as_files(request: MlEnvironmentAsFilesRequest) -> GeneratedSources:
    return GeneratedSources(request.protocol_sources)


def rules():
    return [*collect_rules(), UnionRule(GenerateSourcesRequest, MlEnvironmentAsFilesRequest)]
