"""The registry, its environment configuration and versioned handlers, in process."""

import asyncio

import pytest

from taskplane import (
    ConfigError,
    FlowLimits,
    Health,
    PermanentError,
    RegistryConfig,
    TaskContext,
    TaskRegistry,
    VersionedHandler,
)


def ctx(task_type: str, payload: dict, **fields) -> TaskContext:
    return TaskContext(task_id="t1", task_type=task_type, payload=payload, **fields)


def test_environment_chooses_domains_types_and_flags() -> None:
    config = RegistryConfig.from_env(
        {
            "TASK_ENABLED_DOMAINS": "billing, demo",
            "TASK_DISABLED_TYPES": "refund,",
            "TASK_FEATURE_FLAGS": "fast_path:true,beta:false",
        }
    )
    registry = TaskRegistry(config)
    registry.register_handler("charge", lambda c: {}, domain="billing")
    registry.register_handler("refund", lambda c: {}, domain="billing")
    registry.register_handler("welcome", lambda c: {}, domain="users")
    assert registry.task_types() == ["charge"]
    assert config.feature_enabled("fast_path") and not config.feature_enabled("beta")
    assert not config.feature_enabled("unset")


def test_unset_domains_serve_everything_registered() -> None:
    registry = TaskRegistry(RegistryConfig.from_env({}))
    registry.register_handler("a", lambda c: {}, domain="one")
    registry.register_handler("b", lambda c: {}, domain="two")
    assert sorted(registry.domains()) == ["one", "two"]


def test_bad_configuration_is_named() -> None:
    with pytest.raises(ConfigError, match="TASK_FEATURE_FLAGS: 'fast' is not a flag"):
        RegistryConfig.from_env({"TASK_FEATURE_FLAGS": "fast"})
    with pytest.raises(ConfigError, match="TASK_STRICT_CONFIG"):
        RegistryConfig.from_env({"TASK_STRICT_CONFIG": "yes"})
    strict = TaskRegistry(RegistryConfig.from_env({"TASK_ENABLED_DOMAINS": "billing,bil.ling", "TASK_STRICT_CONFIG": "true"}))
    strict.register_handler("charge", lambda c: {}, domain="billing")
    with pytest.raises(ConfigError, match="bil.ling"):
        strict.check()


def test_registration_mistakes_are_refused() -> None:
    registry = TaskRegistry(RegistryConfig())
    with pytest.raises(ConfigError, match="no task types"):
        registry.check()
    registry.register_handler("charge", lambda c: {}, domain="billing")
    with pytest.raises(ConfigError, match="registered twice"):
        registry.register_handler("charge", lambda c: {}, domain="other")
    with pytest.raises(ConfigError, match="not a valid name"):
        registry.register_handler("Charge!", lambda c: {}, domain="billing")
    with pytest.raises(ConfigError, match="not callable"):
        registry.register_handler("refund", 42, domain="billing")


def test_functions_coroutines_and_classes_all_serve() -> None:
    registry = TaskRegistry(RegistryConfig(feature_flags={"loud": True}))

    def blocking(c: TaskContext) -> dict:
        return {"sum": c.payload["a"] + c.payload["b"]}

    async def shout(c: TaskContext) -> dict:
        return {"shout": c.payload["text"].upper() + ("!" if c.feature_enabled("loud") else "")}

    class Greeter:
        """Greets someone."""

        flow_limits = FlowLimits(max_running=2)

        def handle(self, c: TaskContext) -> None:
            return None

        def health_check(self) -> Health:
            return Health(False, "smtp down")

    registry.register_handler("add", blocking, domain="demo")
    registry.register_handler("shout", shout, domain="demo")
    registry.register_handler("greet", Greeter(), domain="demo")

    async def run() -> None:
        assert await registry.process_task(ctx("add", {"a": 2, "b": 3})) == {"sum": 5}
        assert await registry.process_task(ctx("shout", {"text": "hi"})) == {"shout": "HI!"}
        assert await registry.process_task(ctx("greet", {})) is None
        with pytest.raises(PermanentError, match="no handler for task type 'nope'"):
            await registry.process_task(ctx("nope", {}))
        assert await registry.health_check() == {"greet": Health(False, "smtp down")}

    asyncio.run(run())
    greet = registry.get("greet")
    assert greet is not None and greet.description == "Greets someone." and greet.flow == FlowLimits(max_running=2)


def test_versions_are_chosen_per_task_and_fall_back_to_older_ones() -> None:
    versioned = (
        VersionedHandler(default="v1")
        .version("v1", lambda c: {"ran": "v1"})
        .version("v2", lambda c: {"ran": "v2"})
    )
    registry = TaskRegistry(RegistryConfig())
    registry.register_handler("report", versioned, domain="demo")
    assert registry.get("report").versions == ["v1", "v2"]  # type: ignore[union-attr]

    async def run(**fields) -> dict:
        return await registry.process_task(ctx("report", fields.pop("payload", {}), **fields))  # type: ignore[return-value]

    assert asyncio.run(run()) == {"ran": "v1"}
    assert asyncio.run(run(handler_version="v2")) == {"ran": "v2"}
    assert asyncio.run(run(metadata={"handler_version": "v3"})) == {"ran": "v2"}
    assert asyncio.run(run(payload={"version": "v2"})) == {"ran": "v2"}
    with pytest.raises(PermanentError, match="'v9' is not a handler version"):
        asyncio.run(run(handler_version="v9"))
    only_v2 = TaskRegistry(RegistryConfig())
    only_v2.register_handler("report", VersionedHandler("v2").version("v2", lambda c: {}), domain="demo")
    with pytest.raises(PermanentError, match="version v1 is not served here"):
        asyncio.run(only_v2.process_task(ctx("report", {}, handler_version="v1")))
